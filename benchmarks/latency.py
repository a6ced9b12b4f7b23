"""Whole image -> 21 joints on the CPU, side by side with MediaPipe Hands on the same images.

* ours: the exported image -> joints ONNX graph (hand finder, crop, RGB encoder, pose decoder;
  with and without the cloud decoder) under onnxruntime at 1 and 2 threads;
* ``predict``'s own time per image on a folder (reading, finding, cropping, writing the outputs);
* MediaPipe Hands 0.10.14 (palm detector + landmark model, ``static_image_mode``), which picks its
  own threads, in a worker process of its own environment (``benchmarks/mediapipe_worker.py``).

Every engine times the same decoded images (decoding excluded), after a warm-up, in blocks taken
in turn (ours at 1 thread, ours at 2, MediaPipe, then the next block), so that a change in the
machine's load falls on all of them alike. Reports median and 90th percentile.

    python benchmarks/latency.py --ckpt runs/latest/checkpoints/best.ckpt --finder runs/latest-finder/checkpoints/best.ckpt

MediaPipe's environment is ``.venv-mediapipe`` (made on first use; ``--mediapipe-python`` names
another interpreter, ``--no-mediapipe`` skips it). Writes ``benchmarks/results/latency.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIAPIPE_VENV = ROOT / ".venv-mediapipe"
MEDIAPIPE_PIN = "mediapipe==0.10.14"
BLOCK = 50


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def evaluation_images(root: Path, count: int) -> list[Path]:
    files = sorted((root / "evaluation" / "color").glob("*.png"))[:count]
    if len(files) < count:
        raise SystemExit(f"latency: {root}/evaluation/color holds {len(files)} images, expected at least {count} "
                         "(run `make data` first, or pass --data)")
    return files


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU-seconds of the whole machine, of this process and its ended children), or None
    where /proc/stat cannot be read: their difference over the timing is other processes' load."""
    import resource

    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait
    ours = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))
    return busy, ours


def other_load(start: tuple[float, float] | None, began: float) -> float | None:
    """Cores' worth of CPU that other processes used since ``start`` (``cpu_seconds``) at ``began``."""
    end = cpu_seconds()
    if start is None or end is None:
        return None
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / (time.perf_counter() - began)


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.median(ms)), float(np.percentile(ms, 90))


class OnnxEngine:
    """One onnxruntime session of the image -> joints graph at a fixed thread count."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def feeds(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        height, width = rgb.shape[:2]
        K = np.array([[[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]]], dtype=np.float32)
        return {"image": np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0, "K": K}

    def time(self, images: list[np.ndarray]) -> tuple[list[float], list[bool]]:
        ms, found = [], []
        for rgb in images:
            feeds = self.feeds(rgb)  # the array a caller hands over: conversion is not the graph's time
            start = time.perf_counter()
            result = dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
            ms.append((time.perf_counter() - start) * 1000.0)
            found.append(bool(result["found"].reshape(-1)[0] > 0.5))
        return ms, found


class MediaPipeEngine:
    """MediaPipe Hands in its own process and environment (see mediapipe_worker.py)."""

    def __init__(self, python: Path) -> None:
        worker = Path(__file__).with_name("mediapipe_worker.py")
        self.process = subprocess.Popen([str(python), str(worker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        ready = self._reply()
        self.version = ready.get("mediapipe", "?")

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("latency: the MediaPipe worker ended without a reply (see its error above)")
        return json.loads(line)

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        return self._reply()

    def warmup(self, path: Path, count: int) -> None:
        self._ask({"warmup": count, "path": str(path)})

    def time(self, paths: list[Path]) -> tuple[list[float], list[bool]]:
        reply = self._ask({"paths": [str(p) for p in paths]})
        return reply["ms"], reply["found"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def mediapipe_python(given: str | None) -> Path:
    if given:
        return Path(given)
    python = MEDIAPIPE_VENV / "bin" / "python"
    if not python.exists():
        print(f"latency: creating {MEDIAPIPE_VENV} with {MEDIAPIPE_PIN} (its protobuf pin conflicts with onnx's)")
        subprocess.run([sys.executable, "-m", "venv", str(MEDIAPIPE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", MEDIAPIPE_PIN, "pillow"], check=True)
    return python


def time_predict(ckpt: str, finder: str, files: list[Path]) -> tuple[float, float]:
    """(seconds per image of the whole ``predict`` call, of which model loading) on a folder."""
    import shutil

    from crossmodal.predict import load_model, predict_images

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for f in files:
            shutil.copy(f, folder / f.name)
        start = time.perf_counter()
        load_model(ckpt)
        loading = time.perf_counter() - start
        start = time.perf_counter()
        predict_images(ckpt, [folder], finder=finder, out=Path(tmp) / "out")
        total = time.perf_counter() - start
    return total / len(files), loading / len(files)


def export_graphs(ckpt: str, finder: str, folder: Path, size: tuple[int, int]) -> dict[str, Path]:
    from crossmodal.pipeline.export import export_checkpoint_with_finder

    graphs = {}
    # The third graph averages the finder with its mirror image (finder.flip_average): its cost, side by side.
    for name, cloud, flip in (("pose", False, None), ("pose + cloud", True, None),
                              ("pose, finder averaged with its mirror image", False, True)):
        path = folder / f"{len(graphs)}.onnx"
        try:
            export_checkpoint_with_finder(ckpt, finder, "onnx", path, cloud=cloud, image_size=size, flip_average=flip)
        except Exception as exc:  # a model without a cloud decoder has no second graph
            if cloud:
                print(f"latency: no pose + cloud graph ({exc})")
                continue
            raise
        graphs[name] = path
    return graphs


def run(args: argparse.Namespace) -> dict:
    from PIL import Image

    files = evaluation_images(Path(args.data), args.images)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    size = images[0].shape[:2]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_graphs(args.ckpt, args.finder, Path(tmp), size)
        engines: dict[str, object] = {}
        for name, path in graphs.items():
            for threads in args.threads:
                engine = OnnxEngine(path, threads)
                engine.time(images[:args.warmup])
                engines[f"ours ({name}), onnxruntime, {threads} thread{'s' if threads > 1 else ''}"] = engine
        mp_engine = None
        if not args.no_mediapipe:
            mp_engine = MediaPipeEngine(mediapipe_python(args.mediapipe_python))
            mp_engine.warmup(files[0], args.warmup)
        # Other processes' load is measured over the timed blocks: medians taken beside other work
        # move by several milliseconds, more at 2 threads than at 1.
        began, start_cpu = time.perf_counter(), cpu_seconds()
        label_mp = f"MediaPipe Hands {mp_engine.version if mp_engine else ''} (static images, its own threads)"
        for start in range(0, len(files), BLOCK):
            block = slice(start, start + BLOCK)
            for label, engine in engines.items():
                ms, found = engine.time(images[block])
                results.setdefault(label, {"ms": [], "found": []})
                results[label]["ms"] += ms
                results[label]["found"] += found
            if mp_engine:
                ms, found = mp_engine.time(files[block])
                results.setdefault(label_mp, {"ms": [], "found": []})
                results[label_mp]["ms"] += ms
                results[label_mp]["found"] += found
            print(f"latency: {min(start + BLOCK, len(files))}/{len(files)} images", flush=True)
        if mp_engine:
            mp_engine.close()  # its CPU time joins ours once it has ended
        load = other_load(start_cpu, began)
    per_image, loading = time_predict(args.ckpt, args.finder, files[:args.predict_images]) if args.predict_images else (None, None)
    return {"rows": results, "predict": (per_image, loading), "size": size, "count": len(files), "other_load": load}


def write_report(args: argparse.Namespace, measured: dict, out: Path) -> str:
    import onnxruntime
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    height, width = measured["size"]
    lines = [
        "# Whole image -> 21 joints: latency on the CPU",
        "",
        f"- command: `python benchmarks/latency.py {' '.join(sys.argv[1:])}`",
        f"- commit: {commit or 'unknown'}; machine: {os.cpu_count()} CPU cores ({cpu_name()}), no GPU; "
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}",
        f"- images: the first {measured['count']} synthetic evaluation images, {width}x{height}, decoded before timing; "
        f"warm-up {args.warmup} images an engine; blocks of {BLOCK} images taken in turn by every engine",
        "- other processes' load while timing: " + ("unknown" if measured["other_load"] is None else
                                                     f"{measured['other_load']:.2f} of {os.cpu_count()} cores"
                                                     + (" (busy: the medians are not a quiet machine's)"
                                                        if measured["other_load"] > 0.25 else "")),
        "- ours: the `export --finder --format onnx` graph (finder, hand box, crop, RGB encoder, decoders); "
        "MediaPipe: `solutions.hands` with `static_image_mode=True`, one hand, model complexity 1",
        "",
        "| engine | median (ms) | p90 (ms) | hand found |",
        "|---|---:|---:|---:|",
    ]
    for label, row in measured["rows"].items():
        median, p90 = percentiles(row["ms"])
        lines.append(f"| {label} | {median:.1f} | {p90:.1f} | {sum(row['found'])} of {len(row['found'])} |")
    per_image, loading = measured["predict"]
    if per_image is not None:
        lines += ["", f"`predict` on a folder of {args.predict_images} images (finder, crop, model, and writing "
                      f"joints.json, overlay.png, skeleton.png, cloud.ply): **{per_image * 1000:.0f} ms an image**, of which "
                      f"loading the model {loading * 1000:.1f} ms (once, spread over the folder)."]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    from crossmodal.io import atomic_write_text

    atomic_write_text(out, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="pose model checkpoint")
    parser.add_argument("--finder", required=True, help="hand finder checkpoint")
    parser.add_argument("--data", default="data/synthetic", help="synthetic (RHD-format) data folder")
    parser.add_argument("--images", type=int, default=200, help="images timed per engine")
    parser.add_argument("--predict-images", type=int, default=100, help="folder size for predict's time (0 skips)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime thread counts")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mediapipe-python", default=None, help="a Python with mediapipe==0.10.14")
    parser.add_argument("--no-mediapipe", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency.md"))
    args = parser.parse_args(argv)
    print(write_report(args, run(args), Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
