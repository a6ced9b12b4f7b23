"""Test EPE against the share of 3D labels: Fig. 8 of Yang et al. with every weak signal as a line.

    python -m crossmodal.experiment.label_curve [--results experiments/results] [--out NAME]

Reads the recorded tables of ``fig8_weak`` (uniform batches, 10/25/100%) and ``fewer_labels``
(32 labelled frames a step, 5/10%) and writes ``NAME.md`` (one row per series and fraction: mean
± std over seeds, n) and ``NAME.png`` (one line per series, full supervision as a dashed line).
A row's series is its name before the fraction (``clouds_010`` -> clouds); its fraction comes
from its ``data.labeled_fraction`` override. Rows without a finished seed are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: (experiment, series) -> the label of its line. Fig. 8's weak rows sample batches uniformly;
#: fewer_labels gives every step 32 labelled frames, as every labelled-only row does (the two
#: experiments' labelled-only rows at 10% are the same runs).
SERIES = {
    ("fig8_weak", "only"): "labelled only",
    ("fig8_weak", "weak"): "+ clouds, uniform batches (Fig. 8)",
    ("fewer_labels", "only"): "labelled only",
    ("fewer_labels", "clouds"): "+ clouds",
    ("fewer_labels", "biomech"): "+ clouds + constraints",
    ("fewer_labels", "kp2d"): "+ clouds + constraints + 2D keypoints",
    ("fewer_labels", "pretrain"): "labelled only, pre-trained trunk",
    ("fewer_labels", "kp2dpre"): "+ clouds + constraints + 2D keypoints, pre-trained trunk",
}
FULL = ("fig8_weak", "full_100")


def _fraction(row: dict[str, Any]) -> float:
    for item in row.get("overrides", []):
        key, _, value = item.partition("=")
        if key == "data.labeled_fraction":
            return float(value)
    return 1.0


def collect(results: Path) -> tuple[dict[str, list[tuple[float, float, float | None, int]]], dict[str, Any] | None]:
    """{series label: [(fraction, mean EPE, std or None, seeds), ...] sorted by fraction} and the
    fully supervised row's summary (None when it is missing)."""
    series: dict[str, list[tuple[float, float, float | None, int]]] = {}
    full = None
    for experiment in sorted({e for e, _ in SERIES}):
        path = results / f"{experiment}.json"
        if not path.is_file():
            continue
        for row in json.loads(path.read_text())["rows"]:
            summary = row["summary"]
            if not summary.get("n"):
                continue
            if (experiment, row["name"]) == FULL:
                full = summary
                continue
            label = SERIES.get((experiment, row["name"].split("_")[0]))
            if label is not None and all(p[0] != _fraction(row) for p in series.get(label, [])):
                series.setdefault(label, []).append(
                    (_fraction(row), summary["epe_mean"], summary.get("epe_mean_std"), summary["n"]))
    return {k: sorted(v) for k, v in series.items()}, full


def markdown(series: dict[str, list[tuple[float, float, float | None, int]]], full: dict[str, Any] | None) -> str:
    lines = ["| series | labels | test EPE (mm) | seeds |", "|---|---:|---:|---:|"]
    for label, points in series.items():
        for fraction, mean, std, n in points:
            lines.append(f"| {label} | {100 * fraction:g}% | {mean:.2f}" + (f" ± {std:.2f}" if std else "") + f" | {n} |")
    if full is not None:
        std = full.get("epe_mean_std")
        lines.append(f"| full supervision | 100% | {full['epe_mean']:.2f}" + (f" ± {std:.2f}" if std else "")
                     + f" | {full['n']} |")
    return "\n".join(lines) + "\n"


def plot(series: dict[str, list[tuple[float, float, float | None, int]]], full: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        x = [100 * p[0] for p in points]
        ax.errorbar(x, [p[1] for p in points], yerr=[p[2] or 0.0 for p in points], marker="o", capsize=3, label=label)
    if full is not None:
        ax.axhline(full["epe_mean"], color="k", linestyle="--", linewidth=1, label="full supervision (100%)")
    ax.set_xscale("log")
    ax.set_xticks([5, 10, 25, 100], ["5%", "10%", "25%", "100%"])
    ax.set_xlabel("training frames with a 3D label")
    ax.set_ylabel("test EPE mean (mm), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".part.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    from crossmodal.io import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("experiments/results"))
    parser.add_argument("--out", default="labels")
    args = parser.parse_args(argv)
    series, full = collect(args.results)
    if not series:
        print(f"label_curve: no finished row of {', '.join(sorted({e for e, _ in SERIES}))} in {args.results}")
        return 1
    atomic_write_text(args.results / f"{args.out}.md", "# Test EPE against the share of 3D labels\n\n"
                      "Made by `python -m crossmodal.experiment.label_curve` from the recorded tables of fig8_weak "
                      "and fewer_labels.\n\n" + markdown(series, full) + f"\n![labels]({args.out}.png)\n")
    plot(series, full, args.results / f"{args.out}.png")
    print(f"wrote {args.results / (args.out + '.md')} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
