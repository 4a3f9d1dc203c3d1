import numpy as np
import pytest
import torch

from keyvid.eval.fid import (InceptionFeatures, clip_frame_features, fid_inception_v3, frechet_distance,
                             frechet_distance_from_stats, load_inception)
from keyvid.eval.fvd import I3DFeatures, i3d, load_i3d


def test_frechet_distance_closed_form():
    # diagonal Gaussians: |mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2))
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 5.0 + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    # a full covariance against itself: only the mean term remains
    a = np.random.default_rng(0).normal(size=(4, 4))
    cov = a @ a.T + np.eye(4)
    assert frechet_distance_from_stats(np.zeros(4), cov, np.ones(4), cov) == pytest.approx(4.0, abs=1e-6)


def test_frechet_distance_from_samples_approaches_closed_form():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (20000, 2))
    y = rng.normal([3.0, 0.0], [2.0, 1.0], (20000, 2))
    assert frechet_distance(x, y) == pytest.approx(9.0 + (1 + 4 - 4), rel=0.03)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("variant", ["fid", "torchvision"])
def test_inception_features_random_init(variant, tmp_path):
    torch.manual_seed(0)
    net = fid_inception_v3(variant)
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    net = load_inception(path, variant)  # round trip through the loader, strict names
    extractor = InceptionFeatures(net, input_size=75)
    clips = torch.rand(2, 4, 3, 32, 32)
    feats = clip_frame_features(extractor, clips)
    assert feats.shape == (2 * 3, 2048) and torch.isfinite(feats).all()


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        load_inception(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="i3d"):
        load_i3d(tmp_path / "nope.pt")


def test_i3d_features_shapes_and_identical_sets(tmp_path):
    torch.manual_seed(0)
    net = i3d()
    for m in net.modules():  # random BN statistics, so features differ between clips
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "i3d.pt"
    torch.save(net.state_dict(), path)
    extractor = I3DFeatures(load_i3d(path), input_size=32)
    clips = torch.rand(4, 12, 3, 24, 24)
    feats = extractor(clips)
    assert feats.shape == (4, 400) and torch.isfinite(feats).all()
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    other = extractor(torch.rand(4, 12, 3, 24, 24) * 0.2)
    assert frechet_distance(feats, other) > 0


def test_i3d_torchscript_file_is_called_like_stylegan_v(tmp_path):
    class Fake(torch.nn.Module):
        def forward(self, x, rescale: bool = True, resize: bool = True, return_features: bool = False):
            assert not rescale and not resize and return_features
            return x.mean(dim=(2, 3, 4)).repeat(1, 2)

    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(Fake()).save(str(path))
    feats = I3DFeatures(load_i3d(path), input_size=16)(torch.rand(2, 12, 3, 8, 8))
    assert feats.shape == (2, 6)
