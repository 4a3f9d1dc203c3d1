import numpy as np
import pytest
import torch

from data_prep.ingest import list_videos
from data_prep.shards import ShardConfig, write_shards
from data_prep.synthetic import ClipSpec, write_dataset
from keyvid.data.dataset import collate, make_dataset
from keyvid.data.keyframes import normalize_curve, uniform_keyframes

INGEST = {"height": 64, "width": 96}


def _shards(root, out, windows="all"):
    cfg = ShardConfig(flow_kwargs={"preset": "ultrafast"}, ingest_kwargs={**INGEST, "windows": windows})
    s = write_shards(list_videos(root, "avsyncd", "train"), out, "train", cfg, videos_per_shard=2,
                     job_index=0, num_jobs=1)
    return s["urls"]


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    root = write_dataset(tmp / "syn", 6, seed=5, spec=ClipSpec(64, 96, 24.0, 2.0, 16000))
    return _shards(root, tmp / "shards")


@pytest.fixture(scope="module")
def full_urls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    root = write_dataset(tmp / "syn", 4, seed=6, spec=ClipSpec(64, 96, 24.0, 3.0, 16000))
    return _shards(root, tmp / "shards", windows="full")


def _all(ds):
    return sorted(ds, key=lambda s: s["key"])


def test_shapes_and_keyframes(urls):
    samples = _all(make_dataset(urls, seed=0))
    assert len(samples) == 5
    for s in samples:
        assert s["video"].shape == (3, 12, 64, 96) and s["video"].dtype == torch.float32
        assert -1 <= s["video"].min() and s["video"].max() <= 1
        assert s["first_frame"].shape == (3, 64, 96) and torch.equal(s["first_frame"], s["video"][:, 0])
        idx = s["frame_idx"]
        assert idx.shape == (12,) and idx.dtype == torch.int64 and idx[0] == 0
        assert torch.all(idx[1:] > idx[:-1]) and idx[-1] < 48
        assert isinstance(s["fs"], int) and s["fs"] > 0
        assert s["audio"].shape == (1, 32000) and s["audio"].dtype == torch.float32
        assert s["motion"].shape == (48,) and 0 <= s["motion"].min() and s["motion"].max() <= 1
        assert isinstance(s["caption"], str) and s["caption"]


def test_deterministic_under_seed(urls):
    a, b = _all(make_dataset(urls, seed=1, shuffle_buffer=4)), _all(make_dataset(urls, seed=1, shuffle_buffer=4))
    for x, y in zip(a, b):
        assert torch.equal(x["frame_idx"], y["frame_idx"]) and torch.equal(x["video"], y["video"])
    # with few peaks Algorithm 1 has little to choose from; the mixed coin shows the seed is used:
    # some clip gets different frames under different seeds (keyframes under one, uniform under another)
    draws: dict[str, set] = {}
    for seed in range(4):
        for s in make_dataset(urls, seed=seed, sampling="mixed", keyframe_ratio=0.5):
            draws.setdefault(s["key"], set()).add(tuple(s["frame_idx"].tolist()))
    assert max(len(v) for v in draws.values()) == 2


def test_uniform_and_mixed_sampling(urls):
    uniform = torch.from_numpy(uniform_keyframes(48, 12))
    for s in make_dataset(urls, sampling="uniform"):
        assert torch.equal(s["frame_idx"], uniform)
    for s in make_dataset(urls, sampling="mixed", keyframe_ratio=0.0):
        assert torch.equal(s["frame_idx"], uniform)
    for s in make_dataset(urls, mode="upstream"):
        assert s["frame_idx"].shape == (12,) and s["frame_idx"][0] == 0


def test_all_frames_and_resize(urls):
    s = next(iter(make_dataset(urls, all_frames=True, image_size=(32, 48))))
    assert s["video"].shape == (3, 48, 32, 48) and s["frame_idx"].shape == (12,)
    assert s["first_frame"].shape == (3, 32, 48)


def test_batches_collate(urls):
    (b, b2) = list(make_dataset(urls, batch_size=2))  # 5 samples, partial batch dropped
    assert b["video"].shape == (2, 3, 12, 64, 96) and b["audio"].shape == (2, 1, 32000)
    assert isinstance(b["caption"], list) and len(b["key"]) == 2 and "__key__" not in b
    loader = torch.utils.data.DataLoader(make_dataset(urls), batch_size=2, collate_fn=collate, num_workers=2)
    keys = [k for batch in loader for k in batch["key"]]
    assert len(keys) == len(set(keys)) == 5  # workers split shards: every sample once


def test_full_windows_pick_a_seeded_random_window(full_urls):
    starts = set()
    for seed in range(4):
        for s in make_dataset(full_urls, seed=seed, all_frames=True):
            assert s["video"].shape == (3, 48, 64, 96) and s["motion"].shape == (48,)
            assert s["frame_idx"][0] == 0 and s["frame_idx"][-1] < 48
            starts.add((s["key"], s["audio"][0, :100].sum().item()))
    assert len(starts) > 3  # windows differ across seeds (3 s clips: 25 possible starts)
    again = _all(make_dataset(full_urls, seed=3))
    for x, y in zip(_all(make_dataset(full_urls, seed=3)), again):
        assert torch.equal(x["motion"], y["motion"]) and torch.equal(x["frame_idx"], y["frame_idx"])


def test_full_window_motion_is_a_window_of_the_stored_curve(full_urls):
    import io
    import tarfile

    tar = full_urls.replace("{000000..000001}", "000000")
    with tarfile.open(tar) as t:
        name = next(n for n in t.getnames() if n.endswith(".motion.npy"))
        raw = np.load(io.BytesIO(t.extractfile(name).read())).astype(np.float64)
    key = name.split(".")[0]
    s = next(x for x in make_dataset(tar, seed=0) if x["key"] == key)
    windows = [normalize_curve(raw[i : i + 48]).astype(np.float32) for i in range(len(raw) - 47)]
    assert len(raw) == 72 and any(np.allclose(w, s["motion"].numpy()) for w in windows)


def test_resampled_stream_is_infinite_and_seeded(urls):
    from itertools import islice

    a = [s["key"] for s in islice(make_dataset(urls, resampled=True, seed=0, shuffle_buffer=4), 12)]
    b = [s["key"] for s in islice(make_dataset(urls, resampled=True, seed=0, shuffle_buffer=4), 12)]
    assert len(a) == 12 and a == b


def test_unreadable_shard_data_is_skipped_and_counted(urls, tmp_path):
    import io
    import tarfile

    good = _all(make_dataset(urls, seed=0))
    # a shard holding one sample's members twice (what colliding keys wrote) and a truncated shard
    from braceexpand import braceexpand

    src = next(iter(braceexpand(urls)))
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    dup = tmp_path / "dup.tar"
    with tarfile.open(dup, "w") as out:
        first = members[0][0].name.split(".")[0]
        mine = [(m, d) for m, d in members if m.name.startswith(first + ".")]
        for m, data in mine + mine + [(m, d) for m, d in members if not m.name.startswith(first + ".")]:
            out.addfile(m, io.BytesIO(data))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(dup.read_bytes()[:1500])
    ds = make_dataset([str(dup), str(cut)], seed=0)
    got = list(ds)
    assert ds.shard_errors.count >= 2 and len(got) >= 1
    assert {s["key"] for s in got} <= {s["key"] for s in good}
    with pytest.raises(Exception):
        list(make_dataset([str(dup)], seed=0, on_error="raise"))
