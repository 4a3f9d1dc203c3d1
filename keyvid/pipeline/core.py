"""``KeyVIDPipeline``: the components, their checks and files, and the public calls; the stages
themselves are in ``localisation``, ``stages`` and ``inputs`` (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from keyvid.data import NUM_FRAMES
from keyvid.diffusion.denoiser import STAGES, Encoded, KeyVIDDenoiser, encode_conditions, null_conditions
from keyvid.diffusion.schedule import DiffusionSchedule
from keyvid.models.audio_frontend import waveform_to_mel
from keyvid.models.encoders import FrozenCLIPImageEncoder, FrozenCLIPTextEncoder, FrozenVAE, PixelVAE
from keyvid.models.imagebind_audio import ImageBindAudio
from keyvid.models.io import Encoders, load_exported
from keyvid.models.localizer import KeyframeLocalizer
from keyvid.models.resampler import Resampler
from keyvid.models.unet import KeyframeUNet
from keyvid.pipeline.files import (PIPELINE_FILE, check_exports, imagebind_config, localizer_config,
                                   read_saved_config, save_module, stage_modules)
from keyvid.pipeline.inputs import as_list, prepare_image, to_uint8, warn_odd_audio
from keyvid.pipeline.localisation import KeyframeChoice, choose_keyframes
from keyvid.pipeline.options import SamplingOptions
from keyvid.pipeline.stages import KeyframeOutput, KeyVIDOutput, sample_keyframes, sample_video


def _eval(module: nn.Module | None) -> nn.Module | None:
    return None if module is None else module.eval()


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
            save_module(root / "localizer", self.localizer, localizer_config(self.localizer))
        save_module(root / "audio_encoder", self.audio_encoder, imagebind_config(self.audio_encoder))
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
        config = read_saved_config(root)
        stages = config.get("stages", list(STAGES))
        has_localizer = config.get("localizer", True)
        folders = {stage: root / stage for stage in stages}
        pipe = cls(
            localizer=load_exported(root / "localizer") if has_localizer else None,
            audio_encoder=load_exported(root / "audio_encoder"),
            **stage_modules(folders),
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
        check_exports(folders)
        return cls(
            localizer=load_exported(folders["localizer"]) if "localizer" in folders else None,
            audio_encoder=encoders.audio,
            **stage_modules(folders),
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
        """``localisation.choose_keyframes`` with this pipeline's number of keyframes."""
        return choose_keyframes(keyframes, motion, seeds, self.num_keyframes)

    def denoiser(self, stage: str) -> KeyVIDDenoiser:
        """The stage's UNet and image projector with their conditioning (``keyvid.diffusion.denoiser``);
        the same modules, not a copy."""
        self._require(stage, f"the {stage} stage")
        return KeyVIDDenoiser(getattr(self, stage), getattr(self, f"{stage}_projector"), stage, self.audio_layout)

    @property
    def encoders(self) -> Encoders:
        return Encoders(self.vae, self.text_encoder, self.image_encoder, self.audio_encoder)

    # -- the public calls ----------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, image, audio_wave, sr: int | Sequence[int], text: str | Sequence[str] | None = None, *,
                 keyframes: KeyframeChoice = "localizer", seed: int | Sequence[int] = 0,
                 options: SamplingOptions | None = None, **overrides) -> KeyVIDOutput:
        """Generate one video per (image, audio) pair: ``generate_keyframes`` then ``interpolate``.

        Args:
            image: one image or a list (PIL, uint8 numpy "h w [c]", or a path).
            audio_wave: one waveform "n" / "c n" float in [-1, 1], or a list; only the first ~2 s are used.
            sr: sample rate, one for all or one per waveform.
            text: optional prompt(s); None is the empty prompt.
            keyframes: "localizer", "uniform", or indices ("K" for all samples or "b K").
            seed: one seed for every sample, or one per sample.
            options: ``SamplingOptions`` (default: the paper's settings); ``overrides`` are its fields
                by name (``steps=30, anchor_keyframes="replace"``), applied on top.
        """
        options = (options or SamplingOptions()).updated(**overrides)
        self._require("interpolator", "a whole video")
        pixels, mel, seeds, enc, null = self._prepare(image, audio_wave, sr, text, seed)
        keys = self._keyframe_stage(pixels, mel, seeds, enc, null, keyframes, options)
        return self._interpolation_stage(keys, enc, null, options)

    @torch.no_grad()
    def generate_keyframes(self, image, audio_wave, sr: int | Sequence[int], text: str | Sequence[str] | None = None,
                           *, keyframes: KeyframeChoice = "localizer", seed: int | Sequence[int] = 0,
                           options: SamplingOptions | None = None, **overrides) -> KeyframeOutput:
        """Stages 1-2 alone (arguments as ``__call__``'s; ``options.scales_key`` guides): the keyframe
        latents, their indices and each sample's generator state, for ``interpolate``."""
        options = (options or SamplingOptions()).updated(**overrides)
        pixels, mel, seeds, enc, null = self._prepare(image, audio_wave, sr, text, seed)
        return self._keyframe_stage(pixels, mel, seeds, enc, null, keyframes, options)

    @torch.no_grad()
    def interpolate(self, image, audio_wave, sr: int | Sequence[int], text: str | Sequence[str] | None = None, *,
                    keys: KeyframeOutput, options: SamplingOptions | None = None, **overrides) -> KeyVIDOutput:
        """Stage 3 from ``generate_keyframes``' output for the same inputs (``options.scales_interp``
        guides). The same frames as one ``__call__`` with these options, as the keys carry each sample's
        generator state; the seed is theirs."""
        options = (options or SamplingOptions()).updated(**overrides)
        _, _, _, enc, null = self._prepare(image, audio_wave, sr, text, seed=0)
        return self._interpolation_stage(keys, enc, null, options)

    # -- the stages ----------------------------------------------------------------------------

    def _prepare(self, image, audio_wave, sr, text, seed):
        """Inputs as batched tensors, and the encodings both stages share, with the null conditions
        (upstream's; ``keyvid.diffusion.denoiser.null_conditions``)."""
        images = as_list(image, None, "images")
        b = len(images)
        waves = as_list(audio_wave, b, "audio waveforms")
        rates = as_list(sr, b, "sample rates")
        texts = as_list(text if text is not None else "", b, "texts")
        seeds = [int(s) for s in as_list(seed, b, "seeds")]
        dev = self.device
        for i, (w, r) in enumerate(zip(waves, rates)):
            warn_odd_audio(w, r, i)
        pixels = torch.stack([prepare_image(im, self.height, self.width) for im in images]).to(dev)
        mel = torch.stack([waveform_to_mel(w, r) for w, r in zip(waves, rates)]).to(dev)  # "b 1 128 204"
        enc = encode_conditions(self.encoders, texts, pixels, mel)
        null = null_conditions(self.encoders, dev)
        return pixels, mel, seeds, Encoded(enc.text.to(dev), enc.image, enc.audio), \
            Encoded(null.text.to(dev), null.image, null.audio)

    def _keyframe_stage(self, pixels, mel, seeds, enc, null, keyframes: KeyframeChoice,
                        options: SamplingOptions) -> KeyframeOutput:
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
        latents = self._generate_keyframes(first, frame_idx, enc=enc, null=null, gens=gens, **options.stage("keyframes"))
        return KeyframeOutput(latents, key_idx, motion.astype(np.float32), [g.get_state() for g in gens])

    def _interpolation_stage(self, keys: KeyframeOutput, enc, null, options: SamplingOptions) -> KeyVIDOutput:
        self._require("interpolator", "interpolating")
        b = enc.image.shape[0]
        if keys.latents.shape[0] != b or len(keys.rng_states) != b:
            raise ValueError(f"{keys.latents.shape[0]} keyframe sets for {b} inputs")
        gens = [torch.Generator("cpu") for _ in range(b)]
        for g, state in zip(gens, keys.rng_states):
            g.set_state(state)
        frame_idx = torch.from_numpy(np.asarray(keys.keyframes)).to(self.device)
        latents = self._interpolate(keys.latents.to(self.device), frame_idx, enc=enc, null=null, gens=gens,
                                    noise=options.noise, window=options.window, stride=options.stride,
                                    anchor=options.anchor_keyframes, **options.stage("interpolation"))
        frames = self.vae.decode(latents)
        return KeyVIDOutput(frames=to_uint8(frames), keyframes=keys.keyframes, motion=keys.motion)

    def _generate_keyframes(self, first, frame_idx, *, enc: Encoded, null: Encoded, gens, **sampling) -> torch.Tensor:
        """Stage 2 (``stages.sample_keyframes``): "b 4 K h w" keyframe latents."""
        return sample_keyframes(self.denoiser("generator"), first, frame_idx, enc, null, gens, self.schedule, **sampling)

    def _interpolate(self, key_latents, frame_idx, *, enc: Encoded, null: Encoded, gens, **sampling) -> torch.Tensor:
        """Stage 3 (``stages.sample_video``): "b 4 48 h w" latents."""
        return sample_video(self.denoiser("interpolator"), key_latents, frame_idx, enc, null, gens, self.schedule,
                            **sampling)
