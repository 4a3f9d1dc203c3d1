"""The pipeline's inputs: an image file or array -> "3 H W" in [-1, 1], audio checks, batching; and the
output frames as uint8."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


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


def warn_odd_audio(wave, sample_rate: int, index: int) -> None:
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


def as_list(x, batch: int | None, what: str) -> list:
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if batch is not None and len(items) == 1 and batch > 1:
        items = items * batch
    if batch is not None and len(items) != batch:
        raise ValueError(f"{len(items)} {what} for a batch of {batch}")
    return items


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """"b 3 t H W" in [-1, 1] -> "b t H W 3" uint8 (rounded; upstream truncates)."""
    v = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return v.permute(0, 2, 3, 4, 1).cpu().numpy()
