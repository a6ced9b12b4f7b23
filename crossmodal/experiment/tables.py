"""An experiment's results: the paper-style table, the CSV, the JSON and the two figures."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from crossmodal.experiment.claims import check_claims, claims_markdown
from crossmodal.experiment.manifest import Experiment, Row
from crossmodal.experiment.records import FINISHED, SUMMARY, Outcome, git_commit
from crossmodal.kinematics import GROUPS as BOUND_GROUPS

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    """Mean and sample standard deviation over the finished seeds of one row, and the mean PCK curve."""
    import numpy as np

    ok = [o for o in outcomes if o.status in FINISHED]
    if not ok:
        return {"n": 0}
    out: dict[str, Any] = {"n": len(ok), "wall_s": sum(o.wall_s or 0.0 for o in ok)}
    for key in SUMMARY:
        values = np.array([o.metrics[key] for o in ok], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
    out["seeds"] = [o.seed for o in ok]
    out["epe_per_seed"] = [o.metrics["epe_mean"] for o in ok]
    curves = [o.val_curve for o in ok if o.val_curve]
    if curves:  # averaged over seeds: had the row stopped improving?
        out["val_first"] = float(np.mean([c[0] for c in curves]))
        out["val_best"] = float(np.mean([min(c) for c in curves]))
        out["val_last"] = float(np.mean([c[-1] for c in curves]))
        # Converged: the last validation within 2% of the run's best, in every seed.
        out["converged"] = all(c[-1] <= 1.02 * min(c) for c in curves)
        # What the last validation gained on the one before it, in % (a curve still falling steeply
        # at its end had more to learn, whatever the schedule did to the lr).
        out["val_last_gain_pct"] = float(np.mean([100 * (c[-2] - c[-1]) / c[-2] for c in curves if len(c) > 1])) \
            if any(len(c) > 1 for c in curves) else None
    fits = [o.train_epe for o in ok if o.train_epe is not None]
    if fits:  # on the runs' own training frames: underfitting or overfitting?
        out["train_epe"], out["train_epe_n"] = float(np.mean(fits)), len(fits)
    broken = [o.metrics["limits_broken"] for o in ok if "limits_broken" in o.metrics]
    if broken:  # anatomy: the share of test predictions outside the labelled frames' bounds
        out["limits_broken"], out["limits_broken_n"] = float(np.mean(broken)), len(broken)
        for group in BOUND_GROUPS:
            values = [o.metrics[f"limits_excess/{group}"] for o in ok if f"limits_excess/{group}" in o.metrics]
            if len(values) == len(broken):
                out[f"limits_excess/{group}"] = float(np.mean(values))
    lrs = [o.lr_curve for o in ok if o.lr_curve]
    if lrs:  # the lr at the end of training over its peak: < 1 means it was dropped or annealed
        out["lr_end_over_peak"] = float(np.mean([c[-1] / max(c) for c in lrs]))
    out["thresholds"] = ok[0].metrics["thresholds"]
    out["pck"] = np.mean([o.metrics["pck"] for o in ok], axis=0).tolist()
    return out


def _cell(summary: dict[str, Any], key: str, digits: int) -> str:
    if summary["n"] == 0:
        return "—"
    std = summary[f"{key}_std"]
    return f"{summary[key]:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _val_cells(s: dict[str, Any]) -> list[str]:
    """First / best / last validation EPE, the last validation's gain, converged?, lr end / peak."""
    if "val_first" not in s:
        return ["—"] * 4
    gain = "—" if s.get("val_last_gain_pct") is None else f"{s['val_last_gain_pct']:.1f}%"
    lr = f"{s['lr_end_over_peak']:.2f}" if "lr_end_over_peak" in s else "—"
    return [f"{s['val_first']:.1f} / {s['val_best']:.1f} / {s['val_last']:.1f}", gain,
            "yes" if s["converged"] else "no", lr]


def _train_cell(s: dict[str, Any]) -> str:
    if "train_epe" not in s:
        return "—"
    return f"{s['train_epe']:.2f}" + (f" ({s['train_epe_n']})" if s["train_epe_n"] < s["n"] else "")


def _broken_cell(s: dict[str, Any]) -> str:
    """The share of predictions out of bounds (%), then, where every measured run has it, how far
    beyond them they lie: bones (% of the unit bone) / palm (degrees) / joints (degrees)."""
    if "limits_broken" not in s:
        return "—"
    cell = f"{100 * s['limits_broken']:.1f}"
    if all(f"limits_excess/{g}" in s for g in BOUND_GROUPS):
        cell += " (" + " / ".join(f"{s[f'limits_excess/{g}']:.2f}" for g in BOUND_GROUPS) + ")"
    return cell + (f" [{s['limits_broken_n']} runs]" if s["limits_broken_n"] < s["n"] else "")


def write_results(exp: Experiment, rows: list[Row], outcomes: list[Outcome], results_dir: Path, command: str,
                  seeds: list[int], wall_s: float | None) -> None:
    """``<name>.md`` (table), ``.csv`` (per seed), ``.json`` (everything), ``_pck.png`` and ``_curves.png``."""
    import csv
    import io

    from crossmodal import report
    from crossmodal.fit_check import TRAIN_FRAMES
    from crossmodal.io import atomic_write_text

    import torch

    by_row = {r.name: [o for o in outcomes if o.row == r.name] for r in rows}
    summaries = {name: summarise(os_) for name, os_ in by_row.items()}
    commit = git_commit()
    header = {
        "experiment": exp.name, "title": exp.title, "reference": exp.reference, "command": command,
        "git_commit": commit, "seeds": seeds, "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": wall_s,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
                   + f", torch {torch.__version__}, Python {sys.version.split()[0]}",
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    base = results_dir / exp.name

    lines = [f"# {exp.title}", "", f"- command: `{command}`", f"- git commit: `{commit}`; seeds {seeds}; {header['date']}",
             f"- machine: {header['machine']}",
             "- written from the runs finished so far (`--tables-only`)" if wall_s is None
             else f"- wall time of this invocation: {duration(wall_s)}"]
    commits: dict[str, int] = {}
    for o in outcomes:
        if o.status in FINISHED:
            commits[o.commit or "unknown"] = commits.get(o.commit or "unknown", 0) + 1
    if commits:
        lines.append("- commits that trained the runs: " + ", ".join(f"`{c}` ({n})" for c, n in commits.items()))
    if exp.reference:
        lines.append(f"- paper column: {exp.reference}")
    row_time = sum(o.wall_s or 0.0 for o in outcomes if o.status in FINISHED)
    recorded = sum(o.status == "recorded" for o in outcomes)
    if recorded:
        lines.append(f"- {recorded} of the finished runs are known from their records only (`runs/<hash>.json` beside this "
                     "table: metrics and curves); their run folders (checkpoints, figures) are not in this checkout")
    lines += [f"- train+eval time of the finished runs: {duration(row_time)}",
              "- cells: mean ± sample standard deviation over the seeds that finished (n)",
              "- per seed: each seed's test EPE mean, in the order of the seeds column",
              "- val EPE first / best / last: the validation curve (mean over seeds); last gain: what the last "
              "validation gained on the one before; converged: the last validation within 2% of the best, "
              "in every seed; lr end / peak: below 1 when the schedule dropped or annealed the lr",
              f"- train EPE: on the first {TRAIN_FRAMES} training frames, the model's own (mean over the seeds "
              "measured, their number in brackets when not all): beside val EPE it tells underfitting from overfitting",
              "- outside bounds: % of test predictions, scaled to their own unit bone, that break an anatomical "
              "bound of the labelled training frames (crossmodal/kinematics.py), and in brackets how far beyond the "
              "bounds they lie on average: bone lengths (% of the unit bone) / root-bone angles (degrees) / joint "
              "angles (degrees); mean over the seeds measured. The share saturates on the synthetic hands, whose "
              "bounds are tight (their palm spreads within 2 degrees); the distances do not",
              "",
              "| Row | paper EPE (mm) | " + " | ".join(SUMMARY.values()) + " | per seed | seeds | val EPE first / best / "
              "last | last gain | converged | lr end / peak | train EPE | outside bounds (%) | train+eval time |",
              "|---|---:|" + "---:|" * len(SUMMARY) + "---|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        s = summaries[r.name]
        paper = f"{r.paper:.2f}" if r.paper is not None else "—"
        cells = [_cell(s, k, 2 if k.startswith("epe") else 3) for k in SUMMARY]
        per_seed = ", ".join(f"{v:.2f}" for v in s.get("epe_per_seed", [])) or "—"
        seeds_cell = ", ".join(str(v) for v in s.get("seeds", [])) or "—"
        lines.append(f"| {r.label} | {paper} | " + " | ".join(cells) + f" | {per_seed} | {seeds_cell} | "
                     + " | ".join(_val_cells(s)) + f" | {_train_cell(s)} | {_broken_cell(s)} | "
                     f"{duration(s.get('wall_s'))} |")
    failed = [o for o in outcomes if o.status == "failed"]
    pending = [o for o in outcomes if o.status == "pending"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {o.row} seed {o.seed}: {o.error}" for o in failed]
    if pending:
        lines += ["", "Not run yet: " + ", ".join(f"{o.row} seed {o.seed}" for o in pending)]
    claims = check_claims(exp, outcomes)
    lines += claims_markdown(exp, claims)
    lines += ["", f"![PCK curves]({exp.name}_pck.png)", "", f"![Validation curves]({exp.name}_curves.png)", ""]
    atomic_write_text(base.with_suffix(".md"), "\n".join(lines))

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "label", "seed", "status", *SUMMARY, "train_epe_mean", "paper_epe_mean", "wall_s", "run_dir",
                     "error"])
    for r in rows:
        for o in by_row[r.name]:
            writer.writerow([r.name, r.label, o.seed, o.status, *(o.metrics.get(k, "") for k in SUMMARY),
                             "" if o.train_epe is None else o.train_epe,
                             "" if r.paper is None else r.paper, "" if o.wall_s is None else round(o.wall_s, 1),
                             o.run_dir, o.error])
    atomic_write_text(base.with_suffix(".csv"), buf.getvalue())

    atomic_write_text(base.with_suffix(".json"), json.dumps({
        **header,
        "claims": claims,
        "rows": [{"name": r.name, "label": r.label, "paper_epe_mean": r.paper, "config": str(r.config),
                  "overrides": r.overrides, "summary": summaries[r.name],
                  "runs": [o.__dict__ for o in by_row[r.name]]} for r in rows],
    }, indent=2) + "\n")

    curves = {f"{r.label} (n={summaries[r.name]['n']})": (summaries[r.name]["thresholds"], summaries[r.name]["pck"])
              for r in rows if summaries[r.name]["n"]}
    val = {f"{r.label} (n={len(runs)})": runs for r in rows
           if (runs := [o.val_curve for o in by_row[r.name] if o.status in FINISHED and o.val_curve])}
    for plotted, plot, path in ((curves, report.plot_pck, results_dir / f"{exp.name}_pck.png"),
                                (val, report.plot_validation_curves, results_dir / f"{exp.name}_curves.png")):
        if plotted:
            plot(plotted, path, exp.title)
        else:  # no finished run (yet): a figure left from other runs would contradict the table
            path.unlink(missing_ok=True)
