"""Inference: image + audio (+ text) -> keyframes -> 48-frame, 24 fps video (paper Sections 3.1-3.3).

    pipe = KeyVIDPipeline.from_pretrained("weights/keyvid")        # or tiny_pipeline(seed) for tests
    out = pipe(image, wave, sr, "a lion roaring", seed=0)          # out.frames "b 48 H W 3" uint8

Stages, as upstream KeyVID's ``scripts/generation.sh`` runs them (but in one process and batched):

1. **Localizer**: log-mel -> motion score per frame (48) -> peaks/valleys -> 12 keyframe indices
   (Algorithm 1, paper mode, seeded). ``keyframes="uniform"`` is the paper's ablation (0, 4, ..., 44);
   explicit indices are accepted too (upstream reads precomputed ones from disk).
2. **Keyframe generator**: 12 frames at the keyframe indices from the input image's latent repeated
   as the concat condition, the image tokens and audio tokens of those frames, the frame indices, and
   ``fs`` = ``keyframe_fs`` of the indices (what our data loader trains with; for uniform keyframes it
   is 6, the constant upstream's script passes). DDIM 90, Eq. 4 guidance (s_img 2, s_txt 7.5, s_aud
   7.5), guidance rescale 0.7, eta 1 (upstream's ``--ddim_eta 1.0``).
3. **Interpolator** (Fig. 6b): the generated keyframe latents at their indices in a zero concat
   condition, image and audio tokens for all 48 frames, fs 24, no frame-index embedding; FreeNoise
   (window 12, stride 6, ``keyvid.diffusion.freenoise``); s_aud 9.0 as upstream's script (the paper
   says 7.5).
4. **VAE decode** per frame chunk.

Null conditions (the guidance branches) are upstream's: the CLIP text embedding of "", the projector
applied to CLIP of an all-zero image (mid-grey in [-1, 1]), ImageBind of an all-zero mel.

The two diffusion stages also run apart (``generate_keyframes``, then ``interpolate`` with its
``KeyframeOutput``, in another process if need be: ``launch/generate.py stage=keyframes|interpolate``),
with the same result as one call: the output carries each sample's generator state. A pipeline may
hold only one stage's UNet (``stages``) and no localizer, for a run that trains and samples the
stages in separate jobs; what a call needs and lacks fails with the component's name.

Randomness: each sample has its own CPU ``torch.Generator`` seeded with its seed (one int for all
samples, as upstream re-seeds every clip, or one per sample), used for the VAE posterior sample, the
initial noise, the noise shuffle and every DDIM step, and the same seed drives keyframe selection. A
sample's output therefore does not depend on what else is in the batch.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors.torch import save_file
from torch import nn

from keyvid.data import NUM_FRAMES
from keyvid.data.keyframes import detect_keypoints, keyframe_fs, select_keyframes, uniform_keyframes
from keyvid.diffusion.freenoise import NoiseMode, initial_noise, temporal_windows
from keyvid.diffusion.guidance import GuidanceScales
from keyvid.diffusion.sampling import denoise
from keyvid.diffusion.schedule import Conditioning, DiffusionSchedule
from keyvid.models import builders
from keyvid.models.audio_frontend import waveform_to_mel
from keyvid.models.encoders import FrozenCLIPImageEncoder, FrozenCLIPTextEncoder, FrozenVAE, PixelVAE
from keyvid.models.imagebind_audio import ImageBindAudio, audio_tokens_per_frame
from keyvid.models.localizer import KeyframeLocalizer, keyframe_localizer_tiny
from keyvid.models.resampler import Resampler, select_keyframe_tokens
from keyvid.models.unet import KeyframeUNet
from keyvid.models.io import load_exported, tiny_encoders

INTERPOLATOR_FS = 24  # upstream generation.sh: FS=24 for the interpolation stage
PIPELINE_FILE = "pipeline.json"
WEIGHTS = "model.safetensors"  # our own modules; diffusers/transformers ones use their own names

# The saved layout: subfolder -> files (what from_pretrained checks before loading anything).
# localizer/, generator/ and interpolator/ are exactly what the trainers export (keyvid.training.export:
# export_model writes config.json + model.safetensors, export_denoiser writes unet/ and image_proj/),
# so a run's export folder can be copied in as it is.
_DIFFUSERS = ("config.json", "diffusion_pytorch_model.safetensors")
COMPONENT_FILES: dict[str, tuple[str, ...]] = {
    "localizer": ("config.json", WEIGHTS),
    "audio_encoder": ("config.json", WEIGHTS),
    **{f"{stage}/{part}": _DIFFUSERS for stage in ("generator", "interpolator") for part in ("unet", "image_proj")},
    "vae": ("config.json",),  # AutoencoderKL weights, or none for a PixelVAE (FrozenVAE.from_pretrained checks)
    "text_encoder": ("config.json", "model.safetensors"),
    "image_encoder": ("config.json", "model.safetensors"),
}

AnchorMode = Literal["none", "replace"]
ANCHOR_MODES = ("none", "replace")
KeyframeChoice = str | Sequence[int] | Sequence[Sequence[int]] | np.ndarray | torch.Tensor


@dataclass
class KeyVIDOutput:
    frames: np.ndarray  # "b 48 H W 3" uint8 RGB
    keyframes: np.ndarray  # "b 12" int64, ascending indices into the 48 frames
    motion: np.ndarray  # "b 48" float32, the localizer's per-frame motion score


STAGES = ("generator", "interpolator")


@dataclass
class KeyframeOutput:
    """Stage 2's result, all ``interpolate`` needs besides the inputs (``select``/``cat`` per sample)."""

    latents: torch.Tensor  # "b 4 K h w" generated keyframe latents
    keyframes: np.ndarray  # "b K" int64 indices
    motion: np.ndarray  # "b 48" float32 motion score (zeros for a pipeline without a localizer)
    rng_states: list[torch.Tensor]  # each sample's generator state after stage 2

    def select(self, i: int) -> KeyframeOutput:
        return KeyframeOutput(self.latents[i : i + 1], self.keyframes[i : i + 1], self.motion[i : i + 1],
                              [self.rng_states[i]])

    @staticmethod
    def cat(items: Sequence[KeyframeOutput]) -> KeyframeOutput:
        return KeyframeOutput(
            torch.cat([o.latents for o in items]), np.concatenate([o.keyframes for o in items]),
            np.concatenate([o.motion for o in items]), [s for o in items for s in o.rng_states],
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, so that ``torch.load(..., weights_only=True)`` reads it back (``from_state_dict``)."""
        return {"latents": self.latents.cpu(), "keyframes": torch.from_numpy(self.keyframes),
                "motion": torch.from_numpy(self.motion), "rng_states": torch.stack(self.rng_states)}

    @staticmethod
    def from_state_dict(state: dict[str, torch.Tensor]) -> KeyframeOutput:
        return KeyframeOutput(state["latents"], state["keyframes"].numpy(), state["motion"].numpy(),
                              list(state["rng_states"]))


# ------------------------------------------------------------------------------------ inputs


def load_image(path: str | Path) -> Image.Image:
    """Open an image file, naming the file in every error; turned upright by its EXIF orientation
    (a phone's JPEG is often stored sideways with an orientation tag), as viewers show it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path} is not a readable image: {err}") from err


def prepare_image(image: Image.Image | np.ndarray | str | Path, height: int, width: int) -> torch.Tensor:
    """Any image -> "3 height width" in [-1, 1].

    Grayscale and palette images become RGB; an alpha channel is composited over white (transparent
    pixels carry arbitrary colour). The image is scaled to cover (height, width), bicubic with PIL's
    antialiasing, and centre-cropped. Upstream resizes the shorter side to min(height, width) and
    centre-crops, which pads a portrait or square image with black for a 320 x 512 output; covering
    avoids that and equals upstream on landscape images wider than 8:5.
    """
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8 'h w' or 'h w c', got {image.dtype}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"unsupported image type {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"empty image ({image.width} x {image.height})")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    scale = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    return pixels / 127.5 - 1.0


LONG_AUDIO_SLACK_S = 0.1  # a clip cut at 2.05 s is not worth a warning
SILENCE_PEAK = 1e-4  # |sample| below this everywhere: nothing for the motion to follow


def _warn_odd_audio(wave, sample_rate: int, index: int) -> None:
    """Warn (not fail) where the video will not be what the audio asked for: short, long or silent audio."""
    w = np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave)
    seconds = w.shape[-1] / float(sample_rate)
    if seconds < 2.0:
        warnings.warn(f"audio {index}: {seconds:.2f} s is shorter than the 2 s video; the rest of the video "
                      "follows padding, not sound (ImageBind's mel pads with a flat spectrum)", stacklevel=4)
    if seconds > 2.0 + LONG_AUDIO_SLACK_S:
        warnings.warn(f"audio {index}: {seconds:.2f} s is longer than the 2 s video; only its first 2 s are used",
                      stacklevel=4)
    if w.size and np.issubdtype(w.dtype, np.floating) and np.nanmax(np.abs(w)) < SILENCE_PEAK:
        warnings.warn(f"audio {index} is silent (peak below {SILENCE_PEAK:g}): the motion has no sound to "
                      "follow", stacklevel=4)


def _as_list(x, batch: int | None, what: str) -> list:
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if batch is not None and len(items) == 1 and batch > 1:
        items = items * batch
    if batch is not None and len(items) != batch:
        raise ValueError(f"{len(items)} {what} for a batch of {batch}")
    return items


def _same_batch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand whichever of two batch-first tensors has batch 1 to the other's batch."""
    n = max(a.shape[0], b.shape[0])
    return a.expand(n, *a.shape[1:]), b.expand(n, *b.shape[1:])


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """"b 3 t H W" in [-1, 1] -> "b t H W 3" uint8 (rounded; upstream truncates)."""
    v = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return v.permute(0, 2, 3, 4, 1).cpu().numpy()


# ------------------------------------------------------------------------------------ sampling


# ------------------------------------------------------------------------------------ pipeline


class KeyVIDPipeline:
    """The three-stage KeyVID inference pipeline; see the module docstring.

    Args:
        localizer: audio mel -> (b, 48) motion score; None for a pipeline that is given its keyframes.
        audio_encoder: ImageBind audio trunk, mel -> (b, 1 + 12*48, 768) tokens for the UNets.
        generator / interpolator: the two KeyframeUNets (the interpolator has no frame-index embedding);
            either may be None (with its projector) for a pipeline that runs only the other stage.
        generator_projector / interpolator_projector: each UNet's image Resampler (48 frames x 16 tokens).
        vae, text_encoder, image_encoder: frozen encoders.
        schedule: the training noise schedule.
        height, width: output size in pixels (the VAE latent is height/f x width/f).
        audio_layout: how ImageBind tokens are split per frame (``"aligned"`` for our training,
            ``"upstream"`` for upstream checkpoints; see ``audio_tokens_per_frame``).
    """

    def __init__(
        self,
        localizer: KeyframeLocalizer | None,
        audio_encoder: ImageBindAudio,
        generator: KeyframeUNet | None,
        interpolator: KeyframeUNet | None,
        generator_projector: Resampler | None,
        interpolator_projector: Resampler | None,
        vae: FrozenVAE | PixelVAE,
        text_encoder: FrozenCLIPTextEncoder,
        image_encoder: FrozenCLIPImageEncoder,
        schedule: DiffusionSchedule | None = None,
        *,
        height: int = 320,
        width: int = 512,
        num_keyframes: int = 12,
        audio_layout: str = "aligned",
    ) -> None:
        self.localizer = _eval(localizer)
        self.audio_encoder = audio_encoder.eval()
        self.generator = _eval(generator)
        self.interpolator = _eval(interpolator)
        self.generator_projector = _eval(generator_projector)
        self.interpolator_projector = _eval(interpolator_projector)
        self.vae = vae
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.schedule = schedule if schedule is not None else DiffusionSchedule()
        self.height, self.width = height, width
        self.num_keyframes = num_keyframes
        self.audio_layout = audio_layout
        self._check_components()

    MODULES = (
        "localizer", "audio_encoder", "generator", "interpolator", "generator_projector",
        "interpolator_projector", "vae", "text_encoder", "image_encoder",
    )

    @property
    def stages(self) -> tuple[str, ...]:
        """The diffusion stages this pipeline holds: ("generator", "interpolator") or one of them."""
        return tuple(name for name in STAGES if getattr(self, name) is not None)

    def _require(self, component: str, what: str) -> None:
        if getattr(self, component) is None:
            raise ValueError(f"this pipeline has no {component} ({what} needs one); it holds "
                             f"{', '.join(self.stages)}{'' if self.localizer is None else ' and a localizer'}")

    def _check_components(self) -> None:
        """Mismatched components fail here with their names, not deep inside a forward."""
        for name in STAGES:
            if (getattr(self, name) is None) != (getattr(self, f"{name}_projector") is None):
                raise ValueError(f"{name} and {name}_projector come together: give both or neither")
        if not self.stages:
            raise ValueError("a pipeline needs a generator, an interpolator or both")
        if self.interpolator is not None and self.interpolator.frame_index_mode != "none":
            raise ValueError(
                f"interpolator has frame_index_mode={self.interpolator.frame_index_mode!r}: these look like "
                "keyframe-generator weights (an interpolator is built with interpolator=True, mode 'none')"
            )
        if self.generator is not None and self.generator.frame_index_mode == "none":
            raise ValueError("generator has frame_index_mode='none': these look like interpolator weights")
        text_dim = self.text_encoder.model.config.hidden_size
        clip_dim = self.image_encoder.model.config.hidden_size
        for name in self.stages:
            unet, proj = getattr(self, name), getattr(self, f"{name}_projector")
            ctx = unet.config.context_dim
            if text_dim != ctx:
                raise ValueError(f"text_encoder width {text_dim} != {name} context_dim {ctx}")
            if proj.config.output_dim != ctx:
                raise ValueError(f"{name}_projector output_dim {proj.config.output_dim} != {name} context_dim {ctx}")
            if proj.config.embedding_dim != clip_dim:
                raise ValueError(
                    f"{name}_projector embedding_dim {proj.config.embedding_dim} != image_encoder width {clip_dim}"
                )
            if proj.config.video_length != NUM_FRAMES:
                raise ValueError(f"{name}_projector has video_length {proj.config.video_length}, expected {NUM_FRAMES}")
        if self.audio_encoder.pos_embed.shape[-1] != 768:
            raise ValueError("audio_encoder must output 768-wide tokens (the UNets' audio_proj_2 input)")
        # The latent (VAE factor f) must survive the UNet's len(channel_mult) - 1 halvings.
        unet = getattr(self, self.stages[0])
        f = self.vae.downsample_factor * 2 ** (len(unet.config.channel_mult) - 1)
        if self.height % f or self.width % f:
            raise ValueError(f"height x width {self.height} x {self.width} must be multiples of {f} (VAE and UNet)")

    @property
    def device(self) -> torch.device:
        return next(getattr(self, self.stages[0]).parameters()).device

    def to(self, device: torch.device | str) -> KeyVIDPipeline:
        for name in self.MODULES:
            if getattr(self, name) is not None:
                getattr(self, name).to(device)
        return self

    def compile_unets(self, channels_last: bool = True) -> KeyVIDPipeline:
        """Regional ``torch.compile`` of both UNets (``KeyframeUNet.compile_blocks``), optionally with
        channels-last activations and convolution weights. Same outputs up to float rounding; about
        1.7x faster sampling on an H100 (BENCHMARKS.md) after a one-off compile of several minutes
        on the first call (per process; inductor's on-disk cache shortens later ones)."""
        for unet in (getattr(self, name) for name in self.stages):
            if channels_last:
                unet.set_channels_last(weights=True)
            unet.compile_blocks()
        return self

    # -- checkpoints ---------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """One subfolder per component (``COMPONENT_FILES``; those it holds) plus ``pipeline.json``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        for stage in self.stages:
            getattr(self, stage).save_pretrained(root / stage / "unet")
            getattr(self, f"{stage}_projector").save_pretrained(root / stage / "image_proj")
        for name in ("vae", "text_encoder", "image_encoder"):
            getattr(self, name).save_pretrained(root / name)
        if self.localizer is not None:
            _save_module(root / "localizer", self.localizer, localizer_config(self.localizer))
        _save_module(root / "audio_encoder", self.audio_encoder, imagebind_config(self.audio_encoder))
        s = self.schedule
        config = {
            "height": self.height,
            "width": self.width,
            "num_keyframes": self.num_keyframes,
            "audio_layout": self.audio_layout,
            "stages": list(self.stages),
            "localizer": self.localizer is not None,
            "schedule": {
                "num_timesteps": s.num_timesteps,
                "beta_start": s.beta_start,
                "beta_end": s.beta_end,
                "dynamic_rescale": s.dynamic_rescale,
                "rescale_base": float(s.scale_arr[-1]),
                "rescale_turning_step": len(s.scale_arr) - s.num_timesteps,
            },
        }
        (root / PIPELINE_FILE).write_text(json.dumps(config, indent=1) + "\n")
        return root

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu") -> KeyVIDPipeline:
        """Load a ``save_pretrained`` directory; a missing file raises ``FileNotFoundError`` naming it."""
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"KeyVID pipeline directory not found: {root}")
        if not (root / PIPELINE_FILE).is_file():
            raise FileNotFoundError(f"{root / PIPELINE_FILE} not found: {root} is not a saved KeyVID pipeline")
        config = json.loads((root / PIPELINE_FILE).read_text())
        stages = config.get("stages", list(STAGES))  # folders saved before partial pipelines hold both
        has_localizer = config.get("localizer", True)
        for name, files in COMPONENT_FILES.items():
            head = name.partition("/")[0]
            if (head in STAGES and head not in stages) or (head == "localizer" and not has_localizer):
                continue
            for file in files:
                if not (root / name / file).is_file():
                    raise FileNotFoundError(f"KeyVID pipeline component {name!r}: {root / name / file} not found")
        folders = {stage: root / stage for stage in stages}
        pipe = cls(
            localizer=load_exported(root / "localizer") if has_localizer else None,
            audio_encoder=load_exported(root / "audio_encoder"),
            **_stage_modules(folders),
            vae=FrozenVAE.from_pretrained(root / "vae"),
            text_encoder=FrozenCLIPTextEncoder.from_pretrained(root / "text_encoder"),
            image_encoder=FrozenCLIPImageEncoder.from_pretrained(root / "image_encoder"),
            schedule=DiffusionSchedule(**config["schedule"]),
            height=config["height"],
            width=config["width"],
            num_keyframes=config["num_keyframes"],
            audio_layout=config["audio_layout"],
        )
        return pipe.to(device)

    @classmethod
    def from_exports(
        cls, localizer: str | Path | None, generator: str | Path | None, interpolator: str | Path | None, encoders,
        **config,
    ) -> KeyVIDPipeline:
        """Assemble a pipeline from the trainers' export folders (``<run_dir>/export``; None leaves that
        component out, see the class docstring) and their frozen encoders
        (``keyvid.models.io.build_encoders``: .vae, .clip_text, .clip_image, .audio);
        ``config`` as the constructor (height, width, num_keyframes, audio_layout). Then
        ``save_pretrained`` writes one self-contained folder."""
        folders = {name: Path(f) for name, f in
                   (("localizer", localizer), ("generator", generator), ("interpolator", interpolator)) if f is not None}
        for key, files in COMPONENT_FILES.items():
            stage, _, part = key.partition("/")
            if stage in folders:
                for file in files:
                    path = folders[stage] / part / file
                    if not path.is_file():
                        raise FileNotFoundError(f"{stage} export: {path} not found")
        return cls(
            localizer=load_exported(folders["localizer"]) if "localizer" in folders else None,
            audio_encoder=encoders.audio,
            **_stage_modules(folders),
            vae=encoders.vae,
            text_encoder=encoders.clip_text,
            image_encoder=encoders.clip_image,
            **config,
        )

    # -- stages --------------------------------------------------------------------------------

    def motion_score(self, mel: torch.Tensor) -> torch.Tensor:
        """"b 1 128 204" -> "b 48" localizer score."""
        return self.localizer(mel.to(self.device)).float()

    def choose_keyframes(self, keyframes: KeyframeChoice, motion: np.ndarray, seeds: list[int]) -> np.ndarray:
        """"localizer" (Algorithm 1 on the score, seeded per sample), "uniform", or given indices -> "b K"."""
        b, k = motion.shape[0], self.num_keyframes
        if isinstance(keyframes, str):
            if keyframes == "localizer":
                return np.stack([select_keyframes(detect_keypoints(m), k, rng=s) for m, s in zip(motion, seeds)])
            if keyframes == "uniform":
                return np.tile(uniform_keyframes(NUM_FRAMES, k), (b, 1))
            raise ValueError(f"keyframes must be 'localizer', 'uniform' or indices, got {keyframes!r}")
        idx = np.asarray(keyframes.cpu() if isinstance(keyframes, torch.Tensor) else keyframes)
        idx = np.broadcast_to(idx, (b, idx.shape[-1])) if idx.ndim == 1 else idx
        if idx.shape != (b, k) or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"given keyframes must be {k} integers per sample (batch {b}), got {idx.dtype} {tuple(idx.shape)}"
            )
        if idx.min() < 0 or idx.max() >= NUM_FRAMES:
            raise ValueError(f"given keyframes must lie in [0, {NUM_FRAMES}), got {idx.min()}..{idx.max()}")
        return np.sort(idx, axis=1).astype(np.int64)

    def _image_tokens(self, projector: Resampler, clip: torch.Tensor, frame_idx: torch.Tensor | None) -> torch.Tensor:
        """"b|1 257 1280" CLIP tokens -> "b (K 16) d" for the frames ``frame_idx`` ("b|1 K"), all 48 if None."""
        tokens = projector(clip)  # "b (48 16) d"
        if frame_idx is None:
            return tokens
        tokens, frame_idx = _same_batch(tokens, frame_idx)
        return select_keyframe_tokens(tokens, frame_idx)

    def _audio_tokens(self, tokens: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """"b|1 N 768" ImageBind tokens -> "b K L 768" for the frames ``frame_idx`` ("b|1 K")."""
        tokens, frame_idx = _same_batch(tokens, frame_idx)
        return audio_tokens_per_frame(tokens, frame_idx, NUM_FRAMES, layout=self.audio_layout)

    def _prepare(self, image, audio_wave, sr, text, seed):
        """Inputs as batched tensors, and the encodings both stages share (nulls as upstream: module
        docstring)."""
        images = _as_list(image, None, "images")
        b = len(images)
        waves = _as_list(audio_wave, b, "audio waveforms")
        rates = _as_list(sr, b, "sample rates")
        texts = _as_list(text if text is not None else "", b, "texts")
        seeds = [int(s) for s in _as_list(seed, b, "seeds")]
        dev = self.device
        for i, (w, r) in enumerate(zip(waves, rates)):
            _warn_odd_audio(w, r, i)
        pixels = torch.stack([prepare_image(im, self.height, self.width) for im in images]).to(dev)
        mel = torch.stack([waveform_to_mel(w, r) for w, r in zip(waves, rates)]).to(dev)  # "b 1 128 204"
        enc = {
            "text_tokens": self.text_encoder(texts).to(dev),
            "null_text": self.text_encoder([""]).to(dev),
            "clip": self.image_encoder(pixels),
            "null_clip": self.image_encoder(torch.zeros_like(pixels[:1])),
            "audio": self.audio_encoder(mel),
            "null_audio": self.audio_encoder(torch.zeros_like(mel[:1])),
        }
        return pixels, mel, seeds, enc

    def _keyframe_stage(self, pixels, mel, seeds, enc, keyframes: KeyframeChoice, **sampling) -> KeyframeOutput:
        self._require("generator", "generating keyframes")
        if isinstance(keyframes, str) and keyframes == "localizer":
            self._require("localizer", 'keyframes="localizer"')
        b = pixels.shape[0]
        motion = (self.motion_score(mel).cpu().numpy() if self.localizer is not None
                  else np.zeros((b, NUM_FRAMES), np.float32))
        key_idx = self.choose_keyframes(keyframes, motion, seeds)
        frame_idx = torch.from_numpy(key_idx).to(pixels.device)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        first = torch.cat([self.vae.encode(pixels[i : i + 1, :, None], generator=gens[i]) for i in range(b)]).float()
        latents = self._generate_keyframes(first, frame_idx, gens=gens, **enc, **sampling)
        return KeyframeOutput(latents, key_idx, motion.astype(np.float32), [g.get_state() for g in gens])

    def _interpolation_stage(self, keys: KeyframeOutput, enc, **sampling) -> KeyVIDOutput:
        self._require("interpolator", "interpolating")
        b = enc["clip"].shape[0]
        if keys.latents.shape[0] != b or len(keys.rng_states) != b:
            raise ValueError(f"{keys.latents.shape[0]} keyframe sets for {b} inputs")
        gens = [torch.Generator("cpu") for _ in range(b)]
        for g, state in zip(gens, keys.rng_states):
            g.set_state(state)
        frame_idx = torch.from_numpy(np.asarray(keys.keyframes)).to(self.device)
        latents = self._interpolate(keys.latents.to(self.device), frame_idx, gens=gens, **enc, **sampling)
        frames = self.vae.decode(latents)
        return KeyVIDOutput(frames=to_uint8(frames), keyframes=keys.keyframes, motion=keys.motion)

    @torch.no_grad()
    def __call__(
        self,
        image,
        audio_wave,
        sr: int | Sequence[int],
        text: str | Sequence[str] | None = None,
        *,
        keyframes: KeyframeChoice = "localizer",
        scales_key: GuidanceScales = GuidanceScales(img=2.0, txt=7.5, aud=7.5),
        scales_interp: GuidanceScales = GuidanceScales(img=2.0, txt=7.5, aud=9.0),
        steps: int = 90,
        guidance_rescale: float = 0.7,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        noise: NoiseMode = "freenoise",
        window: int = 12,
        stride: int = 6,
        progress: bool = False,
        sequential: bool = False,
        anchor_keyframes: AnchorMode = "none",
        final_step: str = "x0",
    ) -> KeyVIDOutput:
        """Generate one video per (image, audio) pair: ``generate_keyframes`` then ``interpolate``.

        Args:
            image: one image or a list (PIL, uint8 numpy "h w [c]", or a path).
            audio_wave: one waveform "n" / "c n" float in [-1, 1], or a list; only the first ~2 s are used.
            sr: sample rate, one for all or one per waveform.
            text: optional prompt(s); None is the empty prompt.
            keyframes: "localizer", "uniform", or indices ("K" for all samples or "b K").
            scales_key / scales_interp: Eq. 4 guidance scales of the two stages.
            seed: one seed for every sample, or one per sample.
            noise, window, stride: the interpolator's FreeNoise settings (``keyvid.diffusion.freenoise``).
            sequential: evaluate the guidance branches and the FreeNoise windows one at a time instead
                of batched (same result up to rounding; the reference for bench/pipeline_breakdown.py).
            anchor_keyframes: "none" (paper and upstream: the interpolator's output as it is; a trained
                interpolator reproduces its conditioning frames) or "replace" (the generated keyframe
                latents are written back at their indices after every interpolation step, noised to
                that step, so the video holds the keyframes exactly whatever the interpolator does).
            final_step: "x0" (the clean prediction at the last DDIM step) or "upstream"
                (``keyvid.diffusion.sampling``'s module docstring says why "x0" is the default).
        """
        if anchor_keyframes not in ANCHOR_MODES:
            raise ValueError(f"anchor_keyframes must be one of {ANCHOR_MODES}, got {anchor_keyframes!r}")
        self._require("interpolator", "a whole video")
        pixels, mel, seeds, enc = self._prepare(image, audio_wave, sr, text, seed)
        common = dict(steps=steps, guidance_rescale=guidance_rescale, eta=eta, progress=progress,
                      sequential=sequential, final_step=final_step)
        keys = self._keyframe_stage(pixels, mel, seeds, enc, keyframes, scales=scales_key, **common)
        return self._interpolation_stage(keys, enc, scales=scales_interp, noise=noise, window=window, stride=stride,
                                         anchor=anchor_keyframes, **common)

    @torch.no_grad()
    def generate_keyframes(
        self,
        image,
        audio_wave,
        sr: int | Sequence[int],
        text: str | Sequence[str] | None = None,
        *,
        keyframes: KeyframeChoice = "localizer",
        scales: GuidanceScales = GuidanceScales(img=2.0, txt=7.5, aud=7.5),
        steps: int = 90,
        guidance_rescale: float = 0.7,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        progress: bool = False,
        sequential: bool = False,
        final_step: str = "x0",
    ) -> KeyframeOutput:
        """Stages 1-2 alone (arguments as ``__call__``'s; ``scales`` is its ``scales_key``): the keyframe
        latents, their indices and each sample's generator state, for ``interpolate``."""
        pixels, mel, seeds, enc = self._prepare(image, audio_wave, sr, text, seed)
        return self._keyframe_stage(pixels, mel, seeds, enc, keyframes, scales=scales, steps=steps,
                                    guidance_rescale=guidance_rescale, eta=eta, progress=progress,
                                    sequential=sequential, final_step=final_step)

    @torch.no_grad()
    def interpolate(
        self,
        image,
        audio_wave,
        sr: int | Sequence[int],
        text: str | Sequence[str] | None = None,
        *,
        keys: KeyframeOutput,
        scales: GuidanceScales = GuidanceScales(img=2.0, txt=7.5, aud=9.0),
        steps: int = 90,
        guidance_rescale: float = 0.7,
        eta: float = 1.0,
        noise: NoiseMode = "freenoise",
        window: int = 12,
        stride: int = 6,
        progress: bool = False,
        sequential: bool = False,
        anchor_keyframes: AnchorMode = "none",
        final_step: str = "x0",
    ) -> KeyVIDOutput:
        """Stage 3 from ``generate_keyframes``' output for the same inputs (arguments as ``__call__``'s;
        ``scales`` is its ``scales_interp``). The same frames as one ``__call__`` with these settings,
        as the keys carry each sample's generator state; the seed is theirs."""
        if anchor_keyframes not in ANCHOR_MODES:
            raise ValueError(f"anchor_keyframes must be one of {ANCHOR_MODES}, got {anchor_keyframes!r}")
        _, _, _, enc = self._prepare(image, audio_wave, sr, text, seed=0)
        return self._interpolation_stage(keys, enc, scales=scales, steps=steps, guidance_rescale=guidance_rescale,
                                         eta=eta, noise=noise, window=window, stride=stride, progress=progress,
                                         sequential=sequential, anchor=anchor_keyframes, final_step=final_step)

    def _generate_keyframes(
        self, first, frame_idx, *, text_tokens, null_text, clip, null_clip, audio, null_audio, gens, **sampling
    ) -> torch.Tensor:
        """Stage 2: "b 4 K h w" keyframe latents."""
        b, k = frame_idx.shape
        fs = torch.tensor([keyframe_fs(idx.cpu().numpy())[1] for idx in frame_idx], device=first.device)
        cond = Conditioning(
            concat=first.expand(-1, -1, k, -1, -1),
            context=torch.cat([text_tokens, self._image_tokens(self.generator_projector, clip, frame_idx)], dim=1),
            audio=self._audio_tokens(audio, frame_idx),
            fs=fs,
            frame_idx=frame_idx,
        )
        null_conds = {
            "text": null_text,
            "image": self._image_tokens(self.generator_projector, null_clip, frame_idx),
            "audio": self._audio_tokens(null_audio, frame_idx),
        }
        x = randn_tensor(tuple(cond["concat"].shape), generator=gens, device=first.device, dtype=first.dtype)
        return denoise(
            self.generator, x, cond, null_conds, self.schedule, generators=gens, desc="keyframes", **sampling
        )

    def _interpolate(
        self, key_latents, frame_idx, *, text_tokens, null_text, clip, null_clip, audio, null_audio, gens,
        noise: NoiseMode, window: int, stride: int, sequential: bool = False, anchor: AnchorMode = "none",
        **sampling,
    ) -> torch.Tensor:
        """Stage 3: "b 4 48 h w" latents from the keyframe latents placed at their indices (Fig. 6b)."""
        b, c, _, h, w = key_latents.shape
        dev = key_latents.device
        concat = key_latents.new_zeros(b, c, NUM_FRAMES, h, w)
        for i in range(b):
            concat[i][:, frame_idx[i]] = key_latents[i]
        all_frames = torch.arange(NUM_FRAMES, device=dev)[None]
        cond = Conditioning(
            concat=concat,
            context=torch.cat([text_tokens, self._image_tokens(self.interpolator_projector, clip, None)], dim=1),
            audio=self._audio_tokens(audio, all_frames),
            fs=torch.full((b,), INTERPOLATOR_FS, device=dev, dtype=torch.long),
            frame_idx=all_frames.expand(b, -1),
        )
        null_conds = {
            "text": null_text,
            "image": self._image_tokens(self.interpolator_projector, null_clip, None),
            "audio": self._audio_tokens(null_audio, all_frames),
        }
        x = torch.cat([
            initial_noise(noise, (1, c, NUM_FRAMES, h, w), window=window, stride=stride,
                          keyframes=frame_idx[i].tolist(), generator=gens[i], device=dev, dtype=concat.dtype)
            for i in range(b)
        ])
        known = None
        if anchor == "replace":
            mask = torch.zeros(b, 1, NUM_FRAMES, 1, 1, dtype=torch.bool, device=dev)
            for i in range(b):
                mask[i, :, frame_idx[i]] = True
            known = (mask, concat)
        with temporal_windows(self.interpolator, window, stride, sequential=sequential):
            return denoise(
                self.interpolator, x, cond, null_conds, self.schedule, generators=gens, desc="interpolation",
                sequential=sequential, known=known, **sampling,
            )


# ------------------------------------------------------------------------------------ our modules' files


def _eval(module: nn.Module | None) -> nn.Module | None:
    return None if module is None else module.eval()


def _stage_modules(folders: dict[str, Path]) -> dict[str, nn.Module | None]:
    """Each stage's UNet and image projector from ``folders[stage]`` (``unet/``, ``image_proj/``); None
    for a stage without a folder."""
    modules = {}
    for stage in STAGES:
        folder = folders.get(stage)
        modules[stage] = None if folder is None else KeyframeUNet.from_pretrained(folder / "unet")
        modules[f"{stage}_projector"] = None if folder is None else Resampler.from_pretrained(folder / "image_proj")
    return modules


def localizer_config(model: KeyframeLocalizer) -> dict:
    """A Hydra-instantiable config that rebuilds ``model`` (drop_path is inactive in eval)."""
    enc = model.encoder
    return {
        "_target_": "keyvid.models.localizer.keyframe_localizer",
        "embed_dim": enc.pos_embed.shape[-1],
        "num_blocks": len(enc.blocks),
        "num_heads": enc.blocks[0].attn.num_heads,
        "variant": model.variant,
        "num_frames": model.num_frames,
        "mel_frames": enc.mel_shape[1],
    }


def imagebind_config(enc: ImageBindAudio) -> dict:
    """A Hydra-instantiable config that rebuilds ``enc``."""
    return {
        "_target_": "keyvid.models.imagebind_audio.ImageBindAudio",
        "embed_dim": enc.pos_embed.shape[-1],
        "num_blocks": len(enc.blocks),
        "num_heads": enc.blocks[0].attn.num_heads,
        "kernel_size": enc.stem.proj.kernel_size[0],
        "stride": list(enc.stem.proj.stride),
        "num_mel_bins": enc.mel_shape[0],
        "mel_frames": enc.mel_shape[1],
        "cls_token": enc.cls_token is not None,
        "out_embed_dim": enc.head_proj.out_features if enc.has_head else None,
        "mlp_ratio": enc.blocks[0].mlp.fc1.out_features // enc.pos_embed.shape[-1],
    }


def _save_module(path: Path, module: nn.Module, config: dict) -> None:
    """The trainers' export format (``keyvid.training.export.export_model``; ``keyvid.models.io.load_exported``
    reads it): the ``_target_`` config that rebuilds the module, and its weights."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path / WEIGHTS)


# ------------------------------------------------------------------------------------ tiny


def _randomize_zero_init(model: nn.Module) -> None:
    """Give zero-initialised layers (UNet output heads, proj_out, audio k/v, ...) torch's default
    init, so that in a random tiny model every input reaches the output and tests can see it."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and not module.weight.any():
            module.reset_parameters()


def tiny_pipeline(seed: int = 0, height: int = 16, width: int = 24) -> KeyVIDPipeline:
    """Every component tiny and random (seeded): CPU tests and ``pipeline=tiny`` runs in seconds.

    The sizes of ``debug=tiny`` training (``keyvid.models.builders`` "tiny" UNets and projectors, the
    trainers' tiny encoders, which are seeded on their own), so a briefly trained tiny export fits in
    via ``from_exports``. 16 x 24 pixels is an 8 x 12 latent with the tiny 2x VAE. Zero-initialised
    layers are re-initialised (``_randomize_zero_init``) so every condition reaches the output.
    """
    encoders = tiny_encoders()
    torch.manual_seed(seed)
    generator, interpolator = builders.unet("tiny"), builders.unet("tiny", interpolator=True)
    for unet in (generator, interpolator):
        _randomize_zero_init(unet)
    return KeyVIDPipeline(
        localizer=keyframe_localizer_tiny(),
        audio_encoder=encoders.audio,
        generator=generator,
        interpolator=interpolator,
        generator_projector=builders.image_projector("tiny"),
        interpolator_projector=builders.image_projector("tiny"),
        vae=encoders.vae,
        text_encoder=encoders.clip_text,
        image_encoder=encoders.clip_image,
        height=height,
        width=width,
    )
