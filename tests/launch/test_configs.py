import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import REPO


def test_submitit_launcher_config_composes(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=["hydra/launcher=slurm", "pipeline=tiny", f"out_dir={tmp_path}"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1


# values for the ??? fields of the root configs that have them (every other field has a default)
REQUIRED = {
    "assemble_pipeline": ["localizer=a", "generator=b", "interpolator=c", "out=d"],
    "evaluate": ["generated=g", "reference=r"],
    "evaluate_localizer": ["checkpoint=c", "data.root=r"],
    "localize": ["audio=a.wav", "checkpoint=c"],
    "prepare_data": ["data.name=n", "data.root=r"],
}


def test_every_root_config_composes_resolves_and_names_its_command(tmp_path):
    """Every conf/*.yaml composes, every interpolation resolves, its header comment shows the command
    that runs it (launch/<script>.py or make), and the script exists."""
    from omegaconf import OmegaConf

    from keyvid.training.config import register

    register()
    roots = sorted(p.stem for p in (REPO / "conf").glob("*.yaml"))
    assert {"train_generator", "generate", "assemble_pipeline", "evaluate"} <= set(roots)
    for name in roots:
        header = (REPO / "conf" / f"{name}.yaml").read_text().splitlines()[:3]
        script = "demo" if name == "demo" else name
        assert header[0].startswith("#") and any(f"launch/{script}.py" in line for line in header), (name, header)
        assert (REPO / "launch" / f"{script}.py").is_file()
        overrides = REQUIRED.get(name, []) + (["debug=tiny", "data.train_shards=x.tar"] if name.startswith("train_") else [])
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose(name, overrides=overrides)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_model_targets_instantiate_at_every_small_size():
    """The model groups' _target_s build at the CPU sizes (tiny and the reproduction's small)."""
    from hydra.utils import instantiate

    for name, sizes in (("generator", ("tiny", "small")), ("interpolator", ("tiny", "small")),
                        ("localizer", ("tiny", "small"))):
        for size in sizes:
            GlobalHydra.instance().clear()
            with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
                cfg = compose(f"train_{name}", overrides=["data.train_shards=x.tar", f"model.size={size}"])
            parts = {k: instantiate(v) for k, v in cfg.model.items() if isinstance(v, type(cfg.model)) and "_target_" in v}
            assert parts, name
            for module in parts.values():
                assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("entry", ["train_generator", "train_interpolator", "train_localizer"])
def test_composed_defaults_are_the_schema_defaults(entry):
    """Defaults are written once: what conf/ composes for train/optim/data is what the dataclasses in
    keyvid/training/config.py say (a YAML may restate a default, never disagree with it)."""
    from dataclasses import asdict

    from omegaconf import OmegaConf

    from keyvid.training.config import DataConfig, OptimConfig, TrainConfig, register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(entry, overrides=["data.train_shards=x.tar"])
    assert OmegaConf.to_container(cfg.train) == asdict(TrainConfig())
    assert OmegaConf.to_container(cfg.optim) == asdict(OptimConfig())
    data = {k: v for k, v in OmegaConf.to_container(cfg.data).items() if k != "train_shards"}
    assert data == {k: v for k, v in asdict(DataConfig()).items() if k != "train_shards"}
