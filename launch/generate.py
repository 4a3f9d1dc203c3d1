"""Image + audio (+ text) -> 48-frame, 24 fps mp4 with the input audio, plus the keyframes it chose.

    python launch/generate.py image=photo.png audio=clip.wav pipeline=weights/keyvid
    python launch/generate.py pipeline=tiny steps=2 image=photo.png audio=clip.wav     # CPU, seconds
    python launch/generate.py -m inputs=pairs.txt scales.aud=4,7.5 scales.img=1,2    # one folder per setting
    python launch/generate.py dataset=data/synthetic_test split=test.txt pipeline=...  # a test split

``dataset=<root>`` (AVSyncD layout: ``<split>`` lists ``class/name.mp4`` under ``videos/``) takes each
listed video's first frame as the image and its audio as the audio, and names the output
``<class>/<name>_clip-0.mp4``, the layout ``launch/evaluate.py ... mode=frames48 num_clips=1`` scores.

Per pair, in the run folder: ``<name>.mp4``, ``<name>.keyframes.json`` (indices, motion score,
settings) and ``<name>.keyframes.png`` (the generated frames at the keyframes over the score).
The run folder also gets ``config.yaml`` and ``git_revision.txt``.

``stage=keyframes`` runs stages 1-2 only and writes ``<name>.keyframes.pt`` (the keyframe latents,
indices, motion score and generator state) beside the JSON and PNG; ``stage=interpolate
keyframes_from=<that folder>`` finishes the videos from them, frame for frame what ``stage=full``
gives with the same settings. A pipeline with only the stage's UNet will do, so the two can be
trained and sampled in separate jobs (``launch/recipes/keyframe_vs_uniform.sh``'s ``PART``).

``round_trip=true`` (with ``dataset=``) samples nothing: each clip's 48 frames go through the
pipeline's VAE (encode, decode) and are written in the same layout, the ceiling every generated
folder is scored against (``launch/evaluate.py``'s fidelity and sync rows).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from keyvid.data import FPS, NUM_FRAMES
from keyvid.data.io import write_av
from keyvid.diffusion.guidance import GuidanceScales
from keyvid.models.audio_frontend import load_audio
from keyvid.pipeline import KeyframeOutput, KeyVIDPipeline, SamplingOptions, load_image, tiny_pipeline, to_uint8
from keyvid.training.run_dir import record_run
from keyvid.visualize import contact_sheet, save_rgb

STAGES = ("full", "keyframes", "interpolate")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".mp4", ".mkv", ".mov", ".webm")


@dataclass
class Pair:
    name: str
    image: Path
    audio: Path
    text: str | None


def _pair(image: Path, audio: Path, text: str | None) -> Pair:
    for path, what in ((image, "image"), (audio, "audio")):
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
    name = image.stem if image.stem == audio.stem else f"{image.stem}__{audio.stem}"
    return Pair(name, image, audio, text)


VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".webm", ".avi")


def dataset_pairs(root: Path, split: str, text: str | None) -> list[Pair]:
    """The clips of a dataset split as pairs: image = the video's first frame, audio = its audio, text =
    ``text`` or else the training caption data prep gives the clip (its class name)."""
    from data_prep.ingest import class_caption
    from keyvid.eval.protocol import read_split

    pairs = []
    for rel in read_split(root, split):
        video = root / "videos" / rel
        if not video.is_file():
            raise FileNotFoundError(f"{root / split} lists {rel}, but {video} does not exist")
        caption = text if text is not None else class_caption(rel)
        pairs.append(Pair(str(Path(rel).with_suffix("")) + "_clip-0", video, video, caption))
    return pairs


def read_image(path: Path):
    """An image file, or the first frame of a video file."""
    if path.suffix.lower() in VIDEO_EXTS:
        from keyvid.data.io import read_av

        return read_av(path, require_audio=False).frames[0]
    return load_image(path)


def setup_inputs(cfg: DictConfig) -> list[Pair]:
    """One pair from ``image``/``audio``/``text``, every pair of the ``inputs`` folder or list file, or
    every clip of a ``dataset`` split."""
    if cfg.get("dataset") is not None:
        if cfg.inputs is not None or cfg.image is not None or cfg.audio is not None:
            raise ValueError("give one of dataset=, inputs= or image=/audio=")
        pairs = dataset_pairs(Path(cfg.dataset), cfg.split, cfg.text)
        if not pairs:
            raise ValueError(f"no clips listed in {Path(cfg.dataset) / cfg.split}")
        return pairs
    if cfg.inputs is None:
        if cfg.image is None or cfg.audio is None:
            raise ValueError("give image=<path> and audio=<path>, or inputs=<folder or list file>")
        return [_pair(Path(cfg.image), Path(cfg.audio), cfg.text)]
    if cfg.image is not None or cfg.audio is not None:
        raise ValueError("give either inputs= or image=/audio=, not both")
    src = Path(cfg.inputs)
    if src.is_dir():
        pairs = []
        for image in sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            audio = next((a for a in sorted(src.glob(image.stem + ".*")) if a.suffix.lower() in AUDIO_EXTS), None)
            if audio is None:
                exts = "|".join(e[1:] for e in AUDIO_EXTS)
                raise FileNotFoundError(f"no audio file {image.stem}.<{exts}> next to {image}")
            text_file = image.with_suffix(".txt")
            pairs.append(_pair(image, audio, text_file.read_text().strip() if text_file.is_file() else cfg.text))
    elif src.is_file():
        pairs = []
        for n, line in enumerate(src.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(maxsplit=2)
            if len(parts) < 2:
                raise ValueError(f"{src}:{n}: expected 'image_path audio_path [text]', got {line!r}")
            image, audio = (p if p.is_absolute() else src.parent / p for p in map(Path, parts[:2]))
            pairs.append(_pair(image, audio, parts[2] if len(parts) == 3 else cfg.text))
    else:
        raise FileNotFoundError(f"inputs not found: {src}")
    if not pairs:
        raise ValueError(f"no image/audio pairs in {src}")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{src}: several pairs would write the same output name: {twice}")
    return pairs


@functools.lru_cache(maxsize=1)  # a multirun sweep in one process loads the weights once
def setup_pipeline(spec: str, device: str, compile: bool = False) -> KeyVIDPipeline:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = tiny_pipeline(seed=0) if spec == "tiny" else KeyVIDPipeline.from_pretrained(spec)
    pipe = pipe.to(device)
    return pipe.compile_unets() if compile else pipe


def _keyframes_arg(value):
    return list(value) if isinstance(value, ListConfig) else value


def video_audio(wave: np.ndarray, sr: int) -> np.ndarray:
    """The audio an output mp4 carries: the first 2 s (the video's length), at most two channels."""
    return np.asarray(wave[:2, : round(NUM_FRAMES / FPS * sr)], dtype=np.float32)


def save_outputs(out: Path, pair: Pair, frames: np.ndarray, keyframes: np.ndarray, motion: np.ndarray,
                 wave: np.ndarray, sr: int, settings: dict) -> Path:
    """mp4 (video + the first 2 s of the input audio, at most two channels), keyframes JSON and PNG."""
    video = write_av(out / f"{pair.name}.mp4", frames, FPS, audio=video_audio(wave, sr), sample_rate=sr)
    record = {
        "video": video.name, "image": str(pair.image), "audio": str(pair.audio), "text": pair.text,
        "keyframes": keyframes.tolist(), "motion": [round(float(m), 5) for m in motion], **settings,
    }
    (out / f"{pair.name}.keyframes.json").write_text(json.dumps(record, indent=1) + "\n")
    save_rgb(out / f"{pair.name}.keyframes.png", contact_sheet(frames, keyframes, motion))
    return video


KEYFRAMES_SUFFIX = ".keyframes.pt"


def save_keyframes(out: Path, pair: Pair, pipe: KeyVIDPipeline, keys: KeyframeOutput, settings: dict) -> Path:
    """``stage=keyframes``: the keyframes file ``stage=interpolate`` reads, its JSON and contact sheet."""
    path = out / f"{pair.name}{KEYFRAMES_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)  # dataset= names are <class>/<clip>
    torch.save(keys.state_dict(), path)
    idx, motion = keys.keyframes[0], keys.motion[0]
    record = {"image": str(pair.image), "audio": str(pair.audio), "text": pair.text, "keyframes": idx.tolist(),
              "motion": [round(float(m), 5) for m in motion], **settings}
    (out / f"{pair.name}.keyframes.json").write_text(json.dumps(record, indent=1) + "\n")
    decoded = to_uint8(pipe.vae.decode(keys.latents.to(pipe.device)))[0]  # "K H W 3"
    frames = np.zeros((NUM_FRAMES, *decoded.shape[1:]), np.uint8)
    frames[idx] = decoded
    save_rgb(out / f"{pair.name}.keyframes.png", contact_sheet(frames, idx, motion))
    return path


def load_keyframes(folder: Path, pair: Pair) -> KeyframeOutput:
    path = folder / f"{pair.name}{KEYFRAMES_SUFFIX}"
    if not path.is_file():
        raise FileNotFoundError(f"keyframes for {pair.name}: {path} not found (run stage=keyframes with the same "
                                "inputs into that folder first)")
    try:
        return KeyframeOutput.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{path} is not a keyframes file written by stage=keyframes: {err}") from err


@torch.no_grad()
def vae_round_trip(pipe: KeyVIDPipeline, pairs: list[Pair], out: Path, seed: int) -> list[Path]:
    """Each dataset clip's first 48 frames through the pipeline's VAE, resized to its frame size."""
    from keyvid.data.dataset import frames_to_tensor
    from keyvid.data.io import read_av

    videos = []
    for pair in pairs:
        clip = read_av(pair.image, require_audio=True)
        if abs(clip.fps - FPS) > 0.01 or len(clip.frames) < NUM_FRAMES:
            raise ValueError(f"round_trip: {pair.image} has {len(clip.frames)} frames at {clip.fps:g} fps; "
                             f"expected at least {NUM_FRAMES} at {FPS}")
        x = frames_to_tensor(clip.frames[:NUM_FRAMES], (pipe.height, pipe.width))[None]  # "1 c t h w"
        g = torch.Generator(pipe.device).manual_seed(seed)
        frames = to_uint8(pipe.vae.decode(pipe.vae.encode(x.to(pipe.device), generator=g)))[0]
        videos.append(write_av(out / f"{pair.name}.mp4", frames, FPS, audio=video_audio(clip.audio, clip.sample_rate),
                               sample_rate=clip.sample_rate))
    print(f"wrote {len(videos)} VAE round trips to {out}")
    return videos


def run(cfg: DictConfig, out: Path) -> list[Path]:
    pairs = setup_inputs(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out_dir {out} cannot be created: {err.strerror or err}") from err
    pipe = setup_pipeline(str(cfg.pipeline), str(cfg.device), bool(cfg.compile))
    record_run(out, OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.round_trip:
        if cfg.get("dataset") is None:
            raise ValueError("round_trip=true needs dataset=<root>: it re-encodes real clips")
        return vae_round_trip(pipe, pairs, out, int(cfg.seed))
    stage = str(cfg.stage)
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if (stage == "interpolate") != (cfg.keyframes_from is not None):
        raise ValueError("keyframes_from=<a stage=keyframes out_dir> goes with stage=interpolate, and only with it")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keys = ("seed", "steps", "guidance_rescale", "eta", "final_step", "scales", "scales_interp", "freenoise",
            "anchor_keyframes", "stage", "keyframes_from")
    settings = {k: resolved[k] for k in keys}
    settings["keyframe_mode"] = resolved["keyframes"]
    options = SamplingOptions(
        steps=cfg.steps, scales_key=GuidanceScales(**cfg.scales), scales_interp=GuidanceScales(**cfg.scales_interp),
        guidance_rescale=cfg.guidance_rescale, eta=cfg.eta, final_step=cfg.final_step, noise=cfg.freenoise.noise,
        window=cfg.freenoise.window, stride=cfg.freenoise.stride, anchor_keyframes=cfg.anchor_keyframes, progress=True)
    videos = []
    for start in range(0, len(pairs), cfg.batch_size):
        batch = pairs[start : start + cfg.batch_size]
        stored = [load_keyframes(Path(cfg.keyframes_from), p) for p in batch] if stage == "interpolate" else None
        images = [read_image(p.image) for p in batch]
        audio = [load_audio(p.audio) for p in batch]
        inputs = (images, [w for w, _ in audio], [sr for _, sr in audio], [p.text or "" for p in batch])
        if stage == "keyframes":
            keys = pipe.generate_keyframes(*inputs, keyframes=_keyframes_arg(cfg.keyframes), seed=cfg.seed,
                                           options=options)
            for i, pair in enumerate(batch):
                videos.append(save_keyframes(out, pair, pipe, keys.select(i), settings))
                print(f"{videos[-1]}  keyframes {keys.keyframes[i].tolist()}")
            continue
        if stage == "interpolate":
            result = pipe.interpolate(*inputs, keys=KeyframeOutput.cat(stored), options=options)
        else:
            result = pipe(*inputs, keyframes=_keyframes_arg(cfg.keyframes), seed=cfg.seed, options=options)
        for i, pair in enumerate(batch):
            videos.append(save_outputs(out, pair, result.frames[i], result.keyframes[i], result.motion[i],
                                       audio[i][0].numpy(), audio[i][1], settings))
            print(f"{videos[-1]}  keyframes {result.keyframes[i].tolist()}")
    return videos


def check_out_dir(argv: list[str]) -> None:
    """Hydra creates ``out_dir`` (its run dir) before ``main`` runs, and fails there with a traceback:
    check an ``out_dir=`` override first and exit with one line naming it."""
    for arg in argv:
        if arg.startswith("out_dir="):
            path = Path(arg.split("=", 1)[1].strip("'\""))
            parent = next((p for p in (path, *path.parents) if p.exists()), Path("."))
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise SystemExit(f"out_dir {path} cannot be created: {parent} is not a writable folder")


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    check_out_dir(sys.argv[1:])
    main()
