"""Where the image -> joints ONNX graph spends its time, by the line of the graph that made each node.

The graph is exported as ``export --finder --format onnx`` makes it (pose output only), run in
onnxruntime with its profiler on the first synthetic evaluation images, and each node's kernel
time is summed under the source line of ``crossmodal/pipeline/graph.py`` it was traced from (the
exporter keeps it in the node's metadata) and under its operator. Nodes the graph optimiser made
from convolutions (the finder's and the encoder's) keep no source line and are listed as
"convolutions (finder, encoder)".

    python benchmarks/graph_profile.py --ckpt runs/latest/checkpoints/best.ckpt --finder runs/latest-finder/checkpoints/best.ckpt

Writes ``benchmarks/results/graph_profile.md`` (``--out``). Profiles are per kernel: they leave
out the session's own overhead, so their total is below latency.py's wall-clock median.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import cpu_name, evaluation_images  # noqa: E402

UNNAMED = "convolutions (finder, encoder)"


def source_lines(path: Path) -> dict[str, str]:
    """Node name -> "function:line code" of the graph line it was traced from."""
    import onnx

    where = {}
    for node in onnx.load(str(path)).graph.node:
        trace = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.stack_trace", "")
        found = re.findall(r"line (\d+), in (\w+)\n\s*(.*)", trace)
        if found:
            line, function, code = found[-1]
            where[node.name] = f"{function}:{line} `{code.strip()[:70]}`"
    return where


def profile(path: Path, images: list[np.ndarray], threads: int) -> list[dict]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for rgb in images:
            height, width = rgb.shape[:2]
            K = np.array([[[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]]], dtype=np.float32)
            session.run(None, {"image": np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0, "K": K})
        return json.loads(Path(session.end_profiling()).read_text())


def attribute(events: list[dict], where: dict[str, str]) -> tuple[collections.Counter, collections.Counter, float]:
    by_line, by_op, total = collections.Counter(), collections.Counter(), 0.0
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        line = where.get(event["name"].removesuffix("_kernel_time"), UNNAMED)
        by_line[line] += event["dur"]
        by_op[event["args"].get("op_name", "?")] += event["dur"]
        total += event["dur"]
    return by_line, by_op, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="pose model checkpoint")
    parser.add_argument("--finder", required=True, help="hand finder checkpoint")
    parser.add_argument("--data", default="data/synthetic", help="synthetic (RHD-format) data folder")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "graph_profile.md"))
    args = parser.parse_args(argv)

    import onnxruntime
    from PIL import Image

    from crossmodal.io import atomic_write_text
    from crossmodal.pipeline.export import export_checkpoint_with_finder

    files = evaluation_images(Path(args.data), args.images)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pose.onnx"
        export_checkpoint_with_finder(args.ckpt, args.finder, "onnx", path, cloud=False, image_size=images[0].shape[:2])
        profile(path, images[:5], args.threads)  # warm-up: first runs allocate
        by_line, by_op, total = attribute(profile(path, images, args.threads), source_lines(path))
    per_image = total / 1000.0 / len(images)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    lines = ["# Where the image -> joints graph's time goes", "",
             f"- command: `python benchmarks/graph_profile.py {' '.join(sys.argv[1:])}`",
             f"- commit: {commit or 'unknown'}; machine: {os.cpu_count()} CPU cores ({cpu_name()}), no GPU; "
             f"onnxruntime {onnxruntime.__version__}, {args.threads} thread(s)",
             f"- {len(images)} synthetic evaluation images; kernel time (onnxruntime's profiler): "
             f"**{per_image:.1f} ms an image**", "",
             "| graph line | share | ms an image |", "|---|---:|---:|"]
    lines += [f"| {line} | {t / total:.1%} | {t / 1000 / len(images):.2f} |" for line, t in by_line.most_common(12)]
    lines += ["", "| operator | share |", "|---|---:|"]
    lines += [f"| {op} | {t / total:.1%} |" for op, t in by_op.most_common(10)]
    text = "\n".join(lines) + "\n"
    atomic_write_text(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
