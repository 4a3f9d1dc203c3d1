import math
import re

import pytest

from keyvid.data.io import read_av
from keyvid.models.unet import KeyframeUNet
from tests.launch.helpers import losses, run_script


@pytest.mark.slow
def test_generator_trains_resumes_exactly_and_exports(tiny_shards, tmp_path):
    shards = f"data.train_shards='{tiny_shards}'"
    ref = losses(run_script("train_generator.py", "debug=tiny", shards, f"run_dir={tmp_path / 'a'}",
                            "train.max_steps=3", "train.save_every=1").stdout)
    assert sorted(ref) == [1, 2, 3]
    run_script("train_generator.py", "debug=tiny", shards, f"run_dir={tmp_path / 'b'}", "train.max_steps=1",
               "train.save_every=1")
    resumed = run_script("train_generator.py", "debug=tiny", shards, f"run_dir={tmp_path / 'b'}",
                         "train.max_steps=3", "train.save_every=1")
    got = losses(resumed.stdout)
    assert sorted(got) == [2, 3]
    for step, value in got.items():
        assert value == pytest.approx(ref[step], abs=1e-5), (step, got, ref)
    unet = KeyframeUNet.from_pretrained(tmp_path / "b" / "export" / "unet")
    assert unet.frame_index_mode == "upstream"


def test_interpolator_trains_with_ema(tiny_shards, tmp_path):
    p = run_script("train_interpolator.py", "debug=tiny", f"data.train_shards='{tiny_shards}'", f"run_dir={tmp_path}",
                   "train.max_steps=2", "train.ema_decay=0.9", "train.sample_every=2")
    assert sorted(losses(p.stdout)) == [1, 2]
    unet = KeyframeUNet.from_pretrained(tmp_path / "export" / "unet")
    assert unet.frame_index_mode == "none"
    assert "data_wait_share" in p.stdout
    preview = read_av(tmp_path / "samples" / "step-0000002.mp4", require_audio=True)
    assert preview.frames.shape[0] == 4  # debug=tiny: 4-frame windows


@pytest.mark.parametrize("launcher", ["cpu_zero2.yaml", "cpu_zero3.yaml"])
def test_generator_trains_under_deepspeed(tiny_shards, tmp_path, launcher):
    """The generator under DeepSpeed ZeRO-2 and ZeRO-3, 2 processes over gloo. Its 0-dim
    cross-attention gates (attn2.beta) broke DeepSpeed's parameter broadcasts
    (``p.data.view(torch.uint8)``) until keyvid.training.distributed shimmed them; ZeRO-3 then holds
    them as (1,) and the export restores 0-dim. Full fine-tuning, so the logged grad norm is real. A
    training preview runs on every rank (ZeRO-3 needs all of them in its forward) and rank 0 writes it."""
    # With a preview at step 2: under ZeRO-3 a preview on rank 0 alone hung (its forward waits for the
    # other rank's parameter gathers); the timeout turns a hang into a failure.
    p = run_script("train_generator.py", "debug=tiny", f"data.train_shards='{tiny_shards}'", f"run_dir={tmp_path}",
                   "train.max_steps=2", "model.trainable=full", "train.sample_every=2", launcher=launcher, timeout=240)
    assert sorted(losses(p.stdout)) == [1, 2]
    assert (tmp_path / "samples" / "step-0000002.mp4").is_file()
    norms = [float(v) for v in re.findall(r"grad_norm=([-+.\w]+)", p.stdout)]
    assert norms and all(math.isfinite(v) and v > 0 for v in norms), norms
    unet = KeyframeUNet.from_pretrained(tmp_path / "export" / "unet")
    assert unet.input_blocks[1][1].transformer_blocks[0].attn2.beta.dim() == 0


def test_previews_do_not_change_the_training_run(tiny_shards, tmp_path):
    """A preview samples in eval mode from its own generator and restores the global random state, so
    the losses of a run with previews at every step are those of the same run without (they differed
    when the preview's dropout and posterior sample drew from the global stream)."""
    args = ("debug=tiny", f"data.train_shards='{tiny_shards}'", "train.max_steps=3", "model.trainable=full")
    plain = losses(run_script("train_generator.py", *args, f"run_dir={tmp_path / 'a'}", "train.sample_every=0").stdout)
    shown = losses(run_script("train_generator.py", *args, f"run_dir={tmp_path / 'b'}", "train.sample_every=1").stdout)
    assert sorted(plain) == [1, 2, 3] and shown == plain
    assert len(list((tmp_path / "b" / "samples").glob("step-*.mp4"))) == 3


def test_validation_loss_on_val_shards_leaves_training_unchanged(tiny_shards, tmp_path):
    """data.val_shards is real: a validation loss every train.val_every steps and at the last, logged as
    val_loss, on the same batches, timesteps and noise each time; the training losses are those of the
    run without it."""
    args = ("debug=tiny", f"data.train_shards='{tiny_shards}'", "train.max_steps=3", "model.trainable=full")
    plain = run_script("train_interpolator.py", *args, f"run_dir={tmp_path / 'a'}").stdout
    val = run_script("train_interpolator.py", *args, f"run_dir={tmp_path / 'b'}", f"data.val_shards='{tiny_shards}'",
                     "train.val_every=2", "train.val_batches=2").stdout
    assert losses(val) == losses(plain) and sorted(losses(plain)) == [1, 2, 3]
    vals = {int(s): float(v) for s, v in re.findall(r"^val step (\d+) val_loss=([0-9.eE+-]+)", val, re.M)}
    assert sorted(vals) == [2, 3] and all(math.isfinite(v) and v > 0 for v in vals.values()), vals
    bad = run_script("train_interpolator.py", *args, f"run_dir={tmp_path / 'c'}", "data.val_shards=/nowhere/v.tar",
                     check=False)
    assert bad.returncode != 0 and "data.val_shards" in bad.stderr + bad.stdout
