"""Fault injection with figures: kill-and-resume per engine, NaN and disk-full faults, a hostile
corpus for data prep, and a bad-input table for inference (RELIABILITY.md is its output).

    python bench/faults.py --out RELIABILITY.tables.md          # everything, CPU, ~30 min on 2 cores
    python bench/faults.py --short                              # what CI runs (tests/test_faults.py)
    python bench/faults.py --only kill --engines single ddp --kills 3

Every row is measured here, on this machine, by the code below; nothing in the tables is typed in.
Exit status 1 when any row fails its criterion, so a regression fails CI.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEP = re.compile(r"^step (\d+)/\d+ loss=([0-9.eE+-]+)", re.M)
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")
LAUNCHERS = {"single": None, "ddp": "cpu_ddp.yaml", "zero2": "cpu_zero2.yaml", "zero3": "cpu_zero3.yaml"}
MOMENTS = ("mid-step", "checkpoint-write", "before-rename", "export")


def _env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    e.pop("WORLD_SIZE", None)
    return e


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------- shards


def tiny_shards(root: Path) -> str:
    """8 synthetic clips at 64x96 -> 2 WebDataset shards (the trainers' debug=tiny input)."""
    from data_prep.ingest import list_videos
    from data_prep.shards import ShardConfig, write_shards
    from data_prep.synthetic import ClipSpec, write_dataset

    if not (root / "shards" / "train-000001.json").exists():
        write_dataset(root / "synthetic", num_clips=8, seed=3, spec=ClipSpec(64, 96), test_fraction=0.25)
        records = list_videos(root / "synthetic", "avsyncd", "train")
        write_shards(records, root / "shards", "train", ShardConfig(ingest_kwargs={"height": 64, "width": 96}),
                     videos_per_shard=3)
    return f"{root}/shards/train-{{000000..000001}}.tar"


# ------------------------------------------------------------------------------- 1. kill and resume


def _train_cmd(model: str, engine: str, shards: str, run_dir: Path, steps: int, save_every: int) -> list[str]:
    script = str(REPO / "launch" / f"train_{model}.py")
    args = ["debug=tiny", f"data.train_shards='{shards}'", f"run_dir={run_dir}", f"train.max_steps={steps}",
            f"train.save_every={save_every}", "train.log_every=1", "train.keep_last=2", "model.trainable=full"]
    if LAUNCHERS[engine] is None:
        return [sys.executable, script, *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "launch" / "accelerate" / LAUNCHERS[engine]), "--main_process_port", str(_free_port()),
            script, *args]


def _weights(export: Path) -> dict:
    from safetensors.torch import load_file

    return {f"{f.parent.name}/{k}": v for f in sorted(export.glob("*/*.safetensors")) for k, v in load_file(f).items()}


def _partial_state(ckpt_dir: Path) -> str:
    """What a kill left behind: partial saves (.tmp) and renamed-but-unmarked checkpoints."""
    if not ckpt_dir.is_dir():
        return "none"
    tmp = [p.name for p in ckpt_dir.glob("*.tmp")]
    unmarked = [p.name for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and not p.name.endswith(".tmp")
                and not (p / "COMPLETE").exists()]
    return ",".join(tmp + unmarked) or "none"


def _run_until(cmd, log: Path, moment: str, run_dir: Path, rng, timeout: float = 600.0):
    """Start ``cmd`` (own process group, output to ``log``); SIGKILL the group at ``moment``.
    Returns (killed, what was seen at the kill) or (False, exit code) when it finished first."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ckpt = run_dir / "checkpoints"
    deadline, delay, t_first = time.monotonic() + timeout, rng.uniform(0.0, 4.0), None
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(cmd)} did not finish within {timeout} s (log: {log})")
            seen = None
            if moment == "mid-step":
                if t_first is None and STEP.search(log.read_text(errors="replace")):
                    t_first = time.monotonic()
                if t_first is not None and time.monotonic() - t_first > delay:
                    seen = "training"
            elif moment == "checkpoint-write":
                if any(ckpt.glob("*.tmp")) and rng.random() < 0.2:
                    seen = "partial .tmp save"
            elif moment == "before-rename":  # the last file accelerate writes is the TrainState pickle
                if any(ckpt.glob("*.tmp/custom_checkpoint_0.pkl")):
                    seen = "save written, not renamed"
            elif moment == "export":
                if (run_dir / "export").exists():
                    seen = "exporting"
            if seen:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True, seen
            time.sleep(0.001)
        return False, proc.returncode
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def kill_resume(model: str, engine: str, shards: str, work: Path, kills: int, steps: int, save_every: int,
                seed: int = 0) -> dict:
    """An uninterrupted reference run, then the same run SIGKILLed ``kills`` times (cycling through
    MOMENTS) and resumed with train.resume=auto each time, until it completes."""
    import random

    from keyvid.training.checkpoint import list_checkpoints

    rng = random.Random(seed)
    had_complete, complete_at_kill = False, []
    work.mkdir(parents=True, exist_ok=True)
    ref_dir, run_dir = work / f"{model}_{engine}_ref", work / f"{model}_{engine}_faulted"
    for d in (ref_dir, run_dir):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    ref_log = work / f"{model}_{engine}_ref.log"
    done, rc = _run_until(_train_cmd(model, engine, shards, ref_dir, steps, save_every), ref_log, "never", ref_dir, rng)
    if rc != 0:
        raise RuntimeError(f"reference run failed (log: {ref_log}):\n{ref_log.read_text()[-3000:]}")
    ref_losses = {int(s): float(v) for s, v in STEP.findall(ref_log.read_text())}
    row = {"model": model, "engine": engine, "kills": 0, "resumed": 0, "missed_resume": 0, "partial_left": 0, "bad_picked": 0,
           "max_steps_lost": 0, "moments": {}}
    logged: dict[int, list[float]] = {}
    last_step, segment = 0, 0
    while True:
        moment = MOMENTS[row["kills"] % len(MOMENTS)] if row["kills"] < kills else "never"
        log = work / f"{model}_{engine}_seg{segment}.log"
        killed, seen = _run_until(_train_cmd(model, engine, shards, run_dir, steps, save_every), log, moment, run_dir, rng)
        text = log.read_text(errors="replace")
        if segment > 0:
            m = RESUMED.search(text)
            row["missed_resume"] += had_complete and not m
            if m:
                row["resumed"] += 1
                picked, at = Path(m.group(1)), int(m.group(2))
                # the latest checkpoint that was complete when the kill came, and no other
                row["bad_picked"] += not complete_at_kill or picked != complete_at_kill[-1]
            else:
                at = 0  # no complete checkpoint yet: a fresh start
            row["max_steps_lost"] = max(row["max_steps_lost"], last_step - at)
        for s, v in STEP.findall(text):
            logged.setdefault(int(s), []).append(float(v))
        steps_here = [int(s) for s, _ in STEP.findall(text)]
        last_step = max(steps_here, default=last_step)
        segment += 1
        if not killed:
            if seen != 0:
                raise RuntimeError(f"resumed run failed (log: {log}):\n{text[-3000:]}")
            break
        row["kills"] += 1
        row["moments"][moment] = row["moments"].get(moment, 0) + 1
        row["partial_left"] += _partial_state(run_dir / "checkpoints") != "none"
        complete_at_kill = list_checkpoints(run_dir / "checkpoints")
        had_complete = bool(complete_at_kill)
    got = _weights(run_dir / "export")
    want = _weights(ref_dir / "export")
    row["weights_max_abs_diff"] = max((float((got[k].float() - want[k].float()).abs().max()) for k in want),
                                      default=float("inf")) if set(got) == set(want) else float("inf")
    row["loss_max_abs_diff"] = max(abs(v - ref_losses[s]) for s, vs in logged.items() for v in vs)
    row["steps_covered"] = sorted(logged) == sorted(ref_losses)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["ok"] = (row["missed_resume"] == 0 and row["bad_picked"] == 0 and row["max_steps_lost"] <= save_every
                 and row["steps_covered"] and row["loss_max_abs_diff"] <= 1e-5 and row["weights_max_abs_diff"] <= 1e-6)
    return row


def kill_table(rows: list[dict], save_every: int) -> str:
    head = ("| model | engine | kills (moments) | resumed from a checkpoint (of kills that left one) | partial saves left by a kill | partial picked | "
            f"max steps lost (interval {save_every}) | all steps logged | max abs loss diff | max abs weight diff | s | ok |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        moments = ", ".join(f"{k} {v}" for k, v in r["moments"].items())
        lines.append(f"| {r['model']} | {r['engine']} | {r['kills']} ({moments}) | {r['resumed']} of {r['resumed'] + r['missed_resume']} | {r['partial_left']} | "
                     f"{r['bad_picked']} | {r['max_steps_lost']} | {r['steps_covered']} | {r['loss_max_abs_diff']:.1e} | "
                     f"{r['weights_max_abs_diff']:.1e} | {r['seconds']} | {'yes' if r['ok'] else '**NO**'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- 4. bad inference input


def _wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1, kind: str = "tone") -> Path:
    import numpy as np
    from scipy.io import wavfile

    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    if kind == "silence":
        wave[:] = 0
    elif kind == "nan":
        wave[len(wave) // 2] = np.nan
    elif kind == "inf":
        wave[len(wave) // 3] = np.inf
    elif kind == "clipped":
        wave = np.sign(wave).astype(np.float32)
    wavfile.write(path, rate, np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave)
    return path


def _image(path: Path, mode: str, size=(96, 64)) -> Path:
    import numpy as np
    from PIL import Image

    rgb = Image.fromarray((np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)).save(path)
    elif mode == "CMYK":
        rgb.convert("CMYK").save(path, "JPEG")
    else:
        rgb.convert(mode).save(path)
    return path


def inference_cases(root: Path) -> list[tuple[str, str, dict, str]]:
    """(group, row, generate.py overrides, expected: ok | warning | error)."""
    root.mkdir(parents=True, exist_ok=True)
    img, wav = _image(root / "photo.png", "RGB"), _wav(root / "tone.wav", 2.0)
    rows = [("image", f"mode {m}", {"image": _image(root / f"mode_{m.replace(';', '_')}.{ext}", m)}, "ok")
            for m, ext in (("L", "png"), ("LA", "png"), ("P", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("I;16", "png"))]
    rows += [("image", "1 x 1", {"image": _image(root / "one.png", "RGB", (1, 1))}, "ok"),
             ("image", "8000 x 8000", {"image": _image(root / "huge.png", "RGB", (8000, 8000))}, "ok")]
    trunc = root / "truncated.png"
    trunc.write_bytes(img.read_bytes()[: len(img.read_bytes()) // 2])
    text_png = root / "notes.png"
    text_png.write_text("not an image\n")
    rows += [("image", "truncated PNG", {"image": trunc}, "error"),
             ("image", "a text file named .png", {"image": text_png}, "error"),
             ("image", "missing file", {"image": root / "nowhere.png"}, "error")]
    for name, kw in (("mono 16 kHz", {}), ("stereo 44.1 kHz", {"rate": 44100, "channels": 2}),
                     ("5.1 48 kHz", {"rate": 48000, "channels": 6}), ("8 kHz", {"rate": 8000}),
                     ("22.05 kHz", {"rate": 22050}), ("96 kHz", {"rate": 96000})):
        rows.append(("audio", name, {"audio": _wav(root / f"a_{len(rows)}.wav", 2.0, **kw)}, "ok"))
    rows += [("audio", "0.3 s", {"audio": _wav(root / "short.wav", 0.3)}, "warning"),
             ("audio", "exactly 2 s", {"audio": _wav(root / "two.wav", 2.0)}, "ok"),
             ("audio", "30 s", {"audio": _wav(root / "long.wav", 30.0)}, "warning"),
             ("audio", "silence", {"audio": _wav(root / "silence.wav", 2.0, kind="silence")}, "warning"),
             ("audio", "a NaN sample", {"audio": _wav(root / "nan.wav", 2.0, kind="nan")}, "error"),
             ("audio", "an inf sample", {"audio": _wav(root / "inf.wav", 2.0, kind="inf")}, "error"),
             ("audio", "clipped full scale", {"audio": _wav(root / "clipped.wav", 2.0, kind="clipped")}, "ok")]
    text_wav = root / "notes.wav"
    text_wav.write_text("not audio\n")
    rows += [("audio", "a text file named .wav", {"audio": text_wav}, "error"),
             ("audio", "missing file", {"audio": root / "nowhere.wav"}, "error"),
             ("text", "empty", {"text": ""}, "ok"),
             ("text", "10 000 characters", {"text": "a lion roaring " * 667}, "warning")]
    for value, expect in (("0", "ok"), ("-1", "ok"), ("nan", "error")):
        rows.append(("guidance", f"scales.aud={value}", {"scales.aud": value}, expect))
    blocker = root / "a_file"
    blocker.write_text("x")
    rows.append(("output", "out_dir below a file", {"out_dir": blocker / "out"}, "error"))
    for group, name, over, expect in rows:
        over.setdefault("image", img)
        over.setdefault("audio", wav)
    return rows


def _deep(tb) -> bool:
    """The innermost frame is inside an installed library (torch, PIL, av...), not keyvid's own code."""
    import traceback

    frames = traceback.extract_tb(tb)
    return bool(frames) and ("site-packages" in frames[-1].filename or "/lib/python3" in frames[-1].filename)


def inference_table(work: Path) -> tuple[str, bool]:
    import warnings

    from hydra import compose, initialize_config_dir

    sys.path.insert(0, str(REPO / "launch"))
    import generate  # launch/generate.py

    rows, ok_all = [], True
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for group, name, over, expect in inference_cases(work / "inputs"):
            out = Path(over.get("out_dir", work / "out" / f"{group}_{len(rows)}"))
            args = [f"pipeline=tiny", "steps=2", "device=cpu", f"out_dir='{out}'"]
            args += [f"{k}='{v}'" if k in ("image", "audio", "text") else f"{k}={v}" for k, v in over.items()
                     if k != "out_dir"]
            cfg = compose("generate", overrides=args)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    generate.run(cfg, out)
                    err = None
                except Exception as e:  # noqa: BLE001 - every failure is a row of the table
                    err = e
            ours = [w for w in caught if "keyvid" in w.filename or "launch" in w.filename or "bench" in w.filename
                    or issubclass(w.category, UserWarning)]
            if err is not None:
                got = "error"
                # the message names what was wrong: the file, the setting, or the output folder
                named = any(Path(str(over[k])).name in str(err) for k in ("image", "audio", "out_dir")
                            if k in over and group in (k, "output")) or \
                    any(k.split(".")[-1] in str(err) for k in over if k not in ("image", "audio", "out_dir"))
                detail = f"{type(err).__name__}: {str(err).splitlines()[0][:140]}"
                clear = named and not _deep(err.__traceback__)
            else:
                got = "warning" if ours else "ok"
                detail = "; ".join(sorted({str(w.message).splitlines()[0][:140] for w in ours})) or "video written"
                clear = True
            passed = got == expect and clear
            ok_all &= passed
            rows.append(f"| {group} | {name} | {expect} | {got} | {detail.replace('|', '/')} | "
                        f"{time.perf_counter() - t0:.1f} | {'yes' if passed else '**NO**'} |")
            print(rows[-1], flush=True)
    head = "| input | case | expected | got | message | s | ok |\n|---|---|---|---|---|---|---|"
    return head + "\n" + "\n".join(rows), ok_all


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="CI: one engine, fewer kills, a smaller corpus")
    ap.add_argument("--only", nargs="*", default=["kill", "numeric", "corpus", "inference"])
    ap.add_argument("--engines", nargs="*", default=None)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--kills", type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the tables (markdown) here too")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="keyvid_faults_"))
    work.mkdir(parents=True, exist_ok=True)
    engines = args.engines or (["single"] if args.short else list(LAUNCHERS))
    models = args.models or (["generator"] if args.short else ["generator", "interpolator"])
    kills = args.kills if args.kills is not None else (2 if args.short else 10)
    steps, save_every = (6, 2) if args.short else (16, 2)
    sections, ok = [], True
    t0 = time.perf_counter()
    if "kill" in args.only:
        shards = tiny_shards(work / "data")
        rows = []
        for model in models:
            for engine in engines:
                rows.append(kill_resume(model, engine, shards, work / "kill", kills, steps, save_every))
                print(kill_table(rows[-1:], save_every).splitlines()[-1], flush=True)
        sections.append("## Kill and resume\n\n" + kill_table(rows, save_every))
        ok &= all(r["ok"] for r in rows)
    if "inference" in args.only:
        table, passed = inference_table(work / "inference")
        sections.append("## Bad input at inference (launch/generate.py, tiny pipeline)\n\n" + table)
        ok &= passed
    report = "\n\n".join(sections) + f"\n\n({time.perf_counter() - t0:.0f} s; `python bench/faults.py {' '.join(argv or sys.argv[1:])}`)\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
