import numpy as np
import pytest
import torch

from keyvid.data.motion import flow_to_score
from keyvid.data.raft import RaftFlow, build_raft


def test_random_raft_runs_on_odd_sizes_and_chunks():
    torch.manual_seed(0)
    frames = np.random.RandomState(0).randint(0, 255, (5, 36, 52, 3), dtype=np.uint8)
    flow = RaftFlow("raft_small", None, device="cpu", num_flow_updates=2, max_pairs=2)
    out = flow(frames)
    assert out.shape == (4, 2, 36, 52) and np.isfinite(out).all()
    # chunking must not change the result
    whole = RaftFlow("raft_small", None, device="cpu", num_flow_updates=2, max_pairs=64)
    whole.model.load_state_dict(flow.model.state_dict())
    np.testing.assert_allclose(whole(frames), out, atol=1e-4)
    assert flow_to_score(out).shape == (5,)


def test_weights_round_trip_and_missing_file(tmp_path):
    model = build_raft("raft_small")
    path = tmp_path / "raft_small.pth"
    torch.save(model.state_dict(), path)
    loaded = build_raft("raft_small", path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        build_raft("raft_large", tmp_path / "nothere.pth")
    with pytest.raises(ValueError, match="raft_huge"):
        build_raft("raft_huge")


@pytest.mark.gpu
def test_raft_bf16_batch_64_on_gpu():
    frames = np.random.RandomState(0).randint(0, 255, (65, 320, 512, 3), dtype=np.uint8)
    flow = RaftFlow("raft_large", None, device="cuda", max_pairs=32)
    assert flow(frames).shape == (64, 2, 320, 512)
