"""Which part of a model decodes its clouds badly: the cloud decoder, or the image latent it is fed?

    PYTHONPATH=. python experiments/cloud_paths.py NAME=runs/experiments/<run> [NAME=<run or .ckpt> ...]
        [--frames 200] [--split val] [--out experiments/results/cloud_paths.md]

At test time a model decodes its cloud from the image: z = mu of q(z|image). A cloud that comes
out wrong there is either the decoder's fault (it cannot draw this hand from any code) or the
latent's (the image lands where the decoder draws another shape). On the first ``--frames``
frames of the split (validation by default: nothing is chosen on test), for each model, the
Chamfer distance (paper Eq. 8, Euclidean, in mm via each frame's bone length) of the
ground-truth cloud to:

- the cloud decoded from the image (the test-time path);
- the cloud decoded from the cloud's own code, z = mu of q(z|cloud): the decoder at its best,
  given a code its encoder chose (only for models that train q(z|cloud) on its own: S4 and the
  weak models, not S3, whose cloud encoder only feeds its joint encoder);
- anchor: the next frame's ground-truth cloud, what a decoder gets that draws a right-sized hand
  in the wrong pose.

and how far the image's code lies from the cloud's, ||mu(image) - mu(cloud)||, beside how far
two different frames' cloud codes lie apart, ||mu(cloud_i) - mu(cloud_i+1)||.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from crossmodal.errors import ConfigError
from crossmodal.experiment.records import git_commit
from crossmodal.figures import encode, load_samples
from crossmodal.io import atomic_write_text
from crossmodal.ops import chamfer_distance
from crossmodal.predict import InferenceModel, load_model


def chamfer_mm(a: np.ndarray, b: np.ndarray, scale_m: np.ndarray) -> np.ndarray:
    """Per-frame Chamfer distance of (N, P, 3) clouds in normalised units, scaled to mm."""
    d = chamfer_distance(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32),
                         reduction="none")
    return d.double().numpy() * scale_m * 1000.0


def cloud_paths(model: InferenceModel, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-frame distances (see the module's docstring) of the frames that have a cloud; the
    cloud-path entries are absent when the model does not train q(z|cloud) on its own."""
    model.require_cloud("cloud_paths")
    keep = samples["has_cloud"].astype(bool)
    if keep.sum() < 2:
        raise ConfigError(f"cloud_paths: {keep.sum()} of the {len(keep)} frames have a cloud; at least 2 are needed")
    clouds, scale = samples["cloud"][keep], samples["scale"][keep].astype(np.float64)
    from_image = model.predict(samples["image"][keep])
    out = {
        "image": chamfer_mm(from_image["cloud"], clouds, scale),
        "anchor": chamfer_mm(np.roll(clouds, -1, axis=0), clouds, scale),
    }
    if "cloud" in model.strategy.posterior_keys:
        code = encode(model, "cloud", clouds)
        out["cloud"] = chamfer_mm(model.decode(code)["cloud"], clouds, scale)
        out["code_gap"] = np.linalg.norm(from_image["z"] - code, axis=1)
        out["code_spread"] = np.linalg.norm(code - np.roll(code, -1, axis=0), axis=1)
    return out


def _cell(values: np.ndarray | None, digits: int) -> str:
    return "—" if values is None else f"{values.mean():.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=<run folder (its checkpoints/best.ckpt) or .ckpt file>")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--out", default="experiments/results/cloud_paths.md")
    args = parser.parse_args()
    rows = []
    for item in args.models:
        name, sep, where = item.partition("=")
        if not sep or not name or not where:
            raise SystemExit(f"cloud_paths: {item!r}: expected NAME=<run folder or .ckpt>")
        path = Path(where)
        ckpt = path if path.suffix == ".ckpt" else path / "checkpoints" / "best.ckpt"
        model = load_model(ckpt)
        with torch.no_grad():  # a context, not a global switch: main() also runs inside the tests' process
            d = cloud_paths(model, load_samples(model, args.frames, split=args.split, asked_by="--frames"))
        rows.append(f"| {name} | {_cell(d['image'], 2)} | {_cell(d.get('cloud'), 2)} | {_cell(d['anchor'], 2)} | "
                    f"{_cell(d.get('code_gap'), 2)} | {_cell(d.get('code_spread'), 2)} | `{ckpt}` |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# Clouds decoded from the image and from the cloud's own code",
        "",
        f"- command: `PYTHONPATH=. python {shlex.join(sys.argv)}`",
        f"- git commit: `{git_commit()}`; the run folders' records are `experiments/results/runs/<run>.json`",
        f"- the first {args.frames} frames of the {args.split} split; Chamfer distance (paper Eq. 8, Euclidean,"
        " the two directions' mean nearest-point distances, summed) to the ground-truth cloud, in mm",
        "- anchor: the next frame's ground-truth cloud; code gap: mean ||mu(image) - mu(cloud)||, beside the mean"
        " ||mu(cloud_i) - mu(cloud_i+1)|| of two frames",
        "",
        "| model | from the image (mm) | from the cloud's code (mm) | anchor: another hand (mm) |"
        " code gap image-cloud | code distance of two frames | checkpoint |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
    ]) + "\n"
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
