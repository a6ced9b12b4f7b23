"""Finished runs: the outcome of each (row, seed), and its record in the repository.

``runs/`` does not survive a change of machine and a campaign may span several, so each finished
run is also kept as ``<records>/<hash>.json``: its ``run.json`` with its curves. A recorded run
counts as finished without its folder.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossmodal.errors import ConfigError
from crossmodal.experiment.manifest import Row
from crossmodal.runlog import lr_curve, validation_curve

#: Metrics summarised per row (keys of metrics.json), with their table headings.
SUMMARY = {"epe_mean": "EPE mean (mm)", "epe_median": "EPE median (mm)", "auc_0_50": "AUC 0-50", "auc_20_50": "AUC 20-50"}
#: Outcomes that count as finished: trained now, found in runs/, or found in the records.
FINISHED = ("done", "reused", "recorded")
#: What a record must hold to stand in for its run folder.
RECORD_KEYS = ("metrics", "val_curve", "lr_curve", "wall_s", "git_commit")


@dataclass
class Outcome:
    """One (row, seed): finished (this time or earlier), failed, or not run yet."""

    row: str
    seed: int
    status: str  # "done" | "reused" | "recorded" (only its record is here) | "failed" | "pending"
    run_dir: str = ""
    wall_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    val_curve: list[float] = field(default_factory=list)  # validation EPE (mm) at each validation
    lr_curve: list[float] = field(default_factory=list)  # learning rate as logged during training
    error: str = ""
    commit: str = ""  # the framework's git commit that trained it (run.json)
    train_epe: float | None = None  # EPE (mm) on its first TRAIN_FRAMES training frames (fit_check)
    threads: int = 1  # torch threads it trained with (older records lack it: they had 1)
    resumed: bool = False  # trained in more than one process (its wall time may mix thread counts)
    thread_s: float | None = None  # its cost in time of one thread, all parts (older records lack it)

    @property
    def cost_s(self) -> float | None:
        """Time of one thread: ``thread_s``, else (older records) ``wall_s`` x ``threads``."""
        if self.thread_s is not None:
            return self.thread_s
        return None if self.wall_s is None else self.wall_s * self.threads


#: Written by the runner itself: a table rewritten beside them is still from a clean checkout.
OUTPUTS = "experiments/results"


def git_commit(root: Path | None = None) -> str:
    """``<sha>`` of the framework's checkout (or of ``root``), ``+dirty`` when tracked files other
    than the results (``OUTPUTS``) differ from it."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                f":(top,exclude){OUTPUTS}"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def finished_outcome(row: Row, seed: int, run_dir: Path, records: Path | None = None) -> Outcome | None:
    """The outcome of an earlier invocation: from ``run_dir/run.json`` if the run folder is here,
    else from its record in ``records`` (the folder was trained on another machine), else None."""
    done = run_dir / "run.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return Outcome(row.name, seed, "reused", str(run_dir), info.get("wall_s"), info["metrics"],
                       validation_curve(run_dir), lr_curve(run_dir), commit=info.get("git_commit", ""),
                       train_epe=info.get("train_epe_mean"), **_bookkeeping(info))
    path = record_path(records, run_dir) if records is not None else None
    if path is None or not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not a valid run record ({exc.msg} at line {exc.lineno}); delete it to retrain the run") from None
    missing = [k for k in RECORD_KEYS if not isinstance(info, dict) or k not in info]
    if missing or not {*SUMMARY, "pck", "thresholds"} <= set(info["metrics"]):
        raise ConfigError(f"{path}: a run record needs {', '.join(RECORD_KEYS)} and the metrics {', '.join(SUMMARY)}, "
                          f"pck, thresholds; missing {missing or 'metrics'}; delete it to retrain the run")
    return Outcome(row.name, seed, "recorded", str(run_dir), info["wall_s"], info["metrics"], info["val_curve"],
                   info["lr_curve"], commit=info["git_commit"], train_epe=info.get("train_epe_mean"),
                   **_bookkeeping(info))


def _bookkeeping(info: dict[str, Any]) -> dict[str, Any]:
    return {"threads": info.get("torch_threads", 1), "resumed": bool(info.get("resumed", False)),
            "thread_s": info.get("thread_s")}


def record_path(records: Path, run_dir: Path) -> Path:
    return records / f"{run_dir.name}.json"


def measure_train_epe(outcome: Outcome) -> None:
    """Add the EPE on the run's own training frames to a finished run folder that lacks it (a run
    trained by an older version), in its ``run.json`` and the outcome."""
    from crossmodal.fit_check import TRAIN_FRAMES, training_frames_epe
    from crossmodal.io import atomic_write_text

    run_dir = Path(outcome.run_dir)
    evaluated = run_dir / "metrics.json"  # names the checkpoint the test metrics came from
    if outcome.train_epe is not None or not evaluated.is_file():
        return
    ckpt = run_dir / "checkpoints" / Path(json.loads(evaluated.read_text())["checkpoint"]).name
    if not ckpt.is_file():
        return
    outcome.train_epe = training_frames_epe(ckpt)
    info = json.loads((run_dir / "run.json").read_text())
    atomic_write_text(run_dir / "run.json", json.dumps({**info, "train_epe_mean": outcome.train_epe,
                                                        "train_frames": TRAIN_FRAMES}, indent=2) + "\n")


def write_record(records: Path, outcome: Outcome) -> None:
    """Keep a finished run's ``run.json`` and curves in the repository's records (see the module doc)."""
    from crossmodal.io import atomic_write_text

    run_dir = Path(outcome.run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    records.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path(records, run_dir), json.dumps(
        {**info, "val_curve": outcome.val_curve, "lr_curve": outcome.lr_curve}, indent=1) + "\n")
