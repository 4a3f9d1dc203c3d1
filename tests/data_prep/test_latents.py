import torch

from data_prep.ingest import list_videos
from data_prep.latents import main as latents_main
from data_prep.shards import ShardConfig, write_shards
from data_prep.synthetic import ClipSpec, write_dataset
from keyvid.data.dataset import make_dataset
from keyvid.models.encoders import tiny_vae
from tests.launch.helpers import losses, run_script


def test_moments_sample_like_online_encoding():
    torch.manual_seed(0)
    vae = tiny_vae()
    video = torch.rand(1, 3, 2, 16, 24) * 2 - 1
    online = vae.encode(video, generator=torch.Generator().manual_seed(3))
    stored = vae.sample_moments(vae.encode_moments(video).half().float(), generator=torch.Generator().manual_seed(3))
    assert online.shape == stored.shape
    torch.testing.assert_close(stored, online, atol=2e-2, rtol=0)  # float16 storage of the moments


def test_latent_shards_train_generator_and_interpolator(tmp_path):
    root = write_dataset(tmp_path / "syn", num_clips=4, seed=9, spec=ClipSpec(32, 48), test_fraction=0)
    summary = write_shards(list_videos(root, "avsyncd", "train"), tmp_path / "shards", "train",
                           ShardConfig(ingest_kwargs={"height": 32, "width": 48}), videos_per_shard=2)
    torch.manual_seed(0)
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "vae")
    latents_main(["--shards", summary["urls"], "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "lat"),
                  "--device", "cpu"])
    urls = summary["urls"].replace(str(tmp_path / "shards"), str(tmp_path / "lat"))
    sample = next(iter(make_dataset(urls, num_keyframes=4, latents=True)))
    assert sample["latent_moments"].shape == (8, 4, 16, 24) and sample["video"].shape[1] == 1
    for script in ("train_generator.py", "train_interpolator.py"):
        p = run_script(script, "debug=tiny", f"data.train_shards='{urls}'", "data.precomputed_latents=true",
                       f"run_dir={tmp_path / script}", "train.max_steps=1")
        assert sorted(losses(p.stdout)) == [1]
