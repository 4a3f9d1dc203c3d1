"""RelSync and AlignSync (Zhang et al., AVSyncD), exactly as lzhangbj/ASVA ``avgen/evaluations/eval.py``.

AVSync classifier
    ``s(a, v)``: a logit saying how well audio ``a`` (ImageBind's normalised log-mel, "b 1 128 204")
    matches the 12-frame, 6 fps video ``v``. Architecture (ASVA ``avsync/models``): a 2D conv audio
    net (7x7/2 stem + four 3x3 blocks, 64->512, mean-pooled), an R(2+1)D-18 video net
    (3x7x7 stem, four stages of two (1x3x3 then 3x1x1) blocks, 64->512, mean-pooled) and an MLP head
    on the concatenation (1024 -> 512 -> 256 -> 1). Video preprocessing: resize to 224 x 224
    (bicubic, antialiased), CLIP mean/std normalisation.

RelSync (per generated clip ``i``, with its reference clip ``r``; audio from each file)
    ``RelSync_i = exp(s(a_i, v_i)) / (exp(s(a_r, v_r)) + exp(s(a_i, v_i))) = sigmoid(s_i - s_r)``.
    The ground truth against itself scores 0.5, which the paper prints as 50.00.

AlignSync
    ImageBind similarity ``ia(f, a) = <vision(f), audio(a)>`` of unit-norm embeddings (cosine).
    ``AlignProb_i = mean over generated frames f = 1..11 of
    exp(ia(f, a_i)) / (exp(ia(ref frame 0, a_r)) + exp(ia(f, a_i)))`` and
    ``AlignSync_i = AlignProb_i * RelSync_i``. The paper prints mean x 100.
    AVSyncD's ImageBind audio branch is the original ``imagebind_huge`` (stride 10 x 10, 12 x 19
    grid), not KeyVID's stride (10, 4) generator encoder; frames are resized to 224 x 224 (bicubic)
    and CLIP-normalised.

Reported: mean and (unbiased) standard deviation over clips.
Weights: the AVSync classifier checkpoint of AVSyncD (``checkpoints/avsync/vggss_sync_contrast/
ckpts/checkpoint-40000/modules`` with ``audio_encoder/``, ``video_encoder/``, ``head/`` diffusers
sub-folders, or one state-dict file with those prefixes) and ``imagebind_huge.pth``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keyvid.models.audio_frontend import waveform_to_mel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AVSYNC_INPUT_SIZE = 224


# ----------------------------------------------------------------------------- AVSync classifier


class _Block2d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class AudioConv2DNet(nn.Module):
    """"b 1 f t" log-mel -> "b w[3]" (AVID-CMA's audio net, as AVSyncD)."""

    def __init__(self, widths=(64, 128, 256, 512)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, widths[0], 7, stride=2, padding=3, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.block1 = _Block2d(widths[0], widths[0], 2)
        self.block2 = _Block2d(widths[0], widths[1], 2)
        self.block3 = _Block2d(widths[1], widths[2], 2)
        self.block4 = _Block2d(widths[2], widths[3])

    def forward(self, x):
        x = self.conv1(x)
        for block in (self.block1, self.block2, self.block3, self.block4):
            x = block(x)
        return x.mean(dim=(2, 3))


class _BlockR2Plus1D(nn.Module):
    """Spatial 1x3x3 then temporal 3x1x1 convolutions, twice, with a projected residual."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.spt_conv1 = nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(cout)
        self.tmp_conv1 = nn.Conv3d(cout, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(cout)
        self.spt_conv2 = nn.Conv3d(cout, cout, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(cout)
        self.tmp_conv2 = nn.Conv3d(cout, cout, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(cout)
        self.res_conv = nn.Conv3d(cin, cout, 1, stride, bias=False) if cin != cout or stride != 1 else None

    def forward(self, x):
        y = F.relu(self.tmp_bn1(self.tmp_conv1(F.relu(self.spt_bn1(self.spt_conv1(x))))))
        y = self.tmp_conv2(F.relu(self.spt_bn2(self.spt_conv2(y))))
        return F.relu(self.out_bn(y + (x if self.res_conv is None else self.res_conv(x))))


class VideoR2Plus1DNet(nn.Module):
    """"b 3 t h w" -> "b w[3]" (R(2+1)D-18 with a full 3D stem, as AVSyncD)."""

    def __init__(self, widths=(64, 128, 256, 512)):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, widths[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        self.conv2x = nn.Sequential(_BlockR2Plus1D(widths[0], widths[0]), _BlockR2Plus1D(widths[0], widths[0]))
        self.conv3x = nn.Sequential(_BlockR2Plus1D(widths[0], widths[1], 2), _BlockR2Plus1D(widths[1], widths[1]))
        self.conv4x = nn.Sequential(_BlockR2Plus1D(widths[1], widths[2], 2), _BlockR2Plus1D(widths[2], widths[2]))
        self.conv5x = nn.Sequential(_BlockR2Plus1D(widths[2], widths[3], 2), _BlockR2Plus1D(widths[3], widths[3]))

    def forward(self, x):
        for stage in (self.conv1, self.conv2x, self.conv3x, self.conv4x, self.conv5x):
            x = stage(x)
        return x.mean(dim=(2, 3, 4))


class FCHead(nn.Module):
    def __init__(self, dim: int = 512):
        super().__init__()
        # indices 1, 4 are Dropout(0) in AVSyncD; kept as identities so checkpoint indices 0, 3, 6 match
        self.fc = nn.Sequential(nn.Linear(2 * dim, dim), nn.Identity(), nn.ReLU(inplace=True),
                                nn.Linear(dim, dim // 2), nn.Identity(), nn.ReLU(inplace=True),
                                nn.Linear(dim // 2, 1))

    def forward(self, audio_emb, video_emb):
        return self.fc(torch.cat([audio_emb, video_emb], dim=1))


class AVSyncClassifier(nn.Module):
    """``s(a, v)``: mel "b 1 f t" + video "b 3 t h w" (preprocessed) -> logit "b"."""

    def __init__(self, widths=(64, 128, 256, 512)):
        super().__init__()
        self.audio_encoder = AudioConv2DNet(widths)
        self.video_encoder = VideoR2Plus1DNet(widths)
        self.head = FCHead(widths[3])

    def forward(self, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.audio_encoder(mel), self.video_encoder(video))[:, 0]


def avsync_classifier() -> AVSyncClassifier:
    return AVSyncClassifier()


def avsync_classifier_tiny() -> AVSyncClassifier:
    return AVSyncClassifier((8, 8, 16, 16))


def load_avsync_classifier(path: str | Path) -> AVSyncClassifier:
    """AVSyncD's classifier from its ``modules`` folder (three diffusers sub-folders) or one state-dict file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"AVSync classifier weights not found: {path} (AVSyncD's "
                                "vggss_sync_contrast/ckpts/checkpoint-40000/modules folder)")
    sd: dict[str, torch.Tensor] = {}
    if path.is_dir():
        for part in ("audio_encoder", "video_encoder", "head"):
            files = [path / part / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")]
            found = [f for f in files if f.is_file()]
            if not found:
                raise FileNotFoundError(f"AVSync classifier part not found: {files[0]} (or .bin)")
            if found[0].suffix == ".safetensors":
                from safetensors.torch import load_file

                part_sd = load_file(str(found[0]))
            else:
                part_sd = torch.load(str(found[0]), map_location="cpu", weights_only=True)
            sd.update({f"{part}.{k}": v for k, v in part_sd.items()})
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    net = avsync_classifier()
    net.load_state_dict(sd, strict=True)
    return net.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- inputs


def _clip_normalize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """"n c h w" in [0, 1] -> resized to size x size (bicubic, antialiased), CLIP-normalised."""
    x = F.interpolate(frames.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def audio_mel(wave: np.ndarray | torch.Tensor, sample_rate: int, duration: float = 2.0) -> torch.Tensor:
    """"c n" waveform -> "1 128 204" normalised log-mel of its centre ``duration`` seconds (AVSyncD)."""
    w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    keep = int(duration * sample_rate)
    if w.shape[-1] > keep:  # AVSyncD's waveform_to_melspectrogram keeps the centre 2 s
        s = (w.shape[-1] - keep) // 2
        w = w[..., s : s + keep]
    return waveform_to_mel(w, sample_rate)


@torch.no_grad()
def avsync_logits(net: AVSyncClassifier, mels: torch.Tensor, clips: torch.Tensor,
                  size: int = AVSYNC_INPUT_SIZE) -> torch.Tensor:
    """Mels "b 1 f t" and protocol clips "b t c h w" in [0, 1] -> logits "b"."""
    b, t = clips.shape[:2]
    video = _clip_normalize(clips.flatten(0, 1), size).unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)
    return net(mels, video.contiguous())


@torch.no_grad()
def image_audio_similarity(vision, audio, frames: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of ImageBind embeddings, per frame: frames "b t c h w", mels "b 1 f t" -> "b t"."""
    b, t = frames.shape[:2]
    img = vision.embed(_clip_normalize(frames.flatten(0, 1), vision.image_size)).unflatten(0, (b, t))
    aud = F.normalize(audio.embed(mels), dim=-1)  # ImageBind's audio embedding / its logit scale
    return torch.einsum("btd,bd->bt", img, aud)


# ----------------------------------------------------------------------------- the metrics


def relsync(gen_logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """exp(s_gen) / (exp(s_ref) + exp(s_gen)) per clip."""
    return torch.sigmoid(gen_logits.double() - ref_logits.double())


def align_prob(gen_sims: torch.Tensor, ref_first_sims: torch.Tensor) -> torch.Tensor:
    """Generated frames 1.. "b t-1" vs the reference first frame "b" -> mean preference "b"."""
    return torch.sigmoid(gen_sims.double() - ref_first_sims.double()[:, None]).mean(dim=1)


def alignsync(gen_sims: torch.Tensor, ref_first_sims: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    return align_prob(gen_sims, ref_first_sims) * rel


def mean_std(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    return float(v.mean()), float(v.std()) if v.numel() > 1 else float("nan")
