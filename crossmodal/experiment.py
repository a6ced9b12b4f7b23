"""Experiments: one folder per table or figure of the paper, one YAML per row, one command.

    python -m crossmodal experiment experiments/table1 [--seeds 0,1] [--rows s1_r_p,...] [key=value ...]

An experiment folder holds ``experiment.yaml`` (title, seeds, rows: label, config file,
extra overrides, the paper's number) and the rows' config files, which are ordinary
training configs (``python -m crossmodal train experiments/table1/s4_rc_chp.yaml`` runs
one row alone). ``key=value`` on the command line applies to every row and has the last
word over the rows' own settings, e.g. ``profile=cpu`` or a shorter ``trainer.max_epochs``.

Every (row, seed) trains in ``<out>/<hash of its resolved config>/``. A run whose
``run.json`` exists is finished and is reused, so a second invocation resumes where the
first stopped (an interrupted run restarts from its last checkpoint), and identical rows
of different experiments (Table 1's S4 is Fig. 8's 100 % row) train once. Each finished
run is also recorded in the repository, ``experiments/results/runs/<hash>.json`` (its
metrics and curves): ``runs/`` does not survive a change of machine, and a campaign of many
CPU hours spans sessions, so a recorded run counts as finished without its folder. A row that
fails is recorded with its error and the others go on. After every row the results are
rewritten (atomically) to ``experiments/results/<name>.md`` (the paper-style table),
``<name>.csv`` (one line per row and seed), ``<name>.json``, ``<name>_pck.png`` and
``<name>_curves.png`` (each row's validation curve).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossmodal.errors import ConfigError, CrossmodalError
from crossmodal.train import lr_curve, validation_curve

MANIFEST = "experiment.yaml"
#: Metrics summarised per row (keys of metrics.json), with their table headings.
SUMMARY = {"epe_mean": "EPE mean (mm)", "epe_median": "EPE median (mm)", "auc_0_50": "AUC 0-50", "auc_20_50": "AUC 20-50"}
#: Keys that name or locate a run without changing what it computes (left out of its hash).
NOT_HASHED = ("name", "out_dir", "resume", "trainer.progress", "data.num_workers")
#: Outcomes that count as finished: trained now, found in runs/, or found in the records.
FINISHED = ("done", "reused", "recorded")
#: What a record must hold to stand in for its run folder.
RECORD_KEYS = ("metrics", "val_curve", "lr_curve", "wall_s", "git_commit")


@dataclass
class Row:
    name: str  # identifier, used in the CSV and --rows
    label: str  # as printed in the table, e.g. "S2 R→C+P"
    config: Path  # the row's training config
    overrides: list[str] = field(default_factory=list)  # extra key=value for this row only
    paper: float | None = None  # the paper's mean EPE (mm) for this row, where published


@dataclass
class Experiment:
    name: str  # the folder's name: results are written as <name>.md/.csv/.json/_pck.png/_curves.png
    folder: Path
    title: str
    reference: str  # where the paper column comes from (dataset, table)
    seeds: list[int]
    overrides: list[str]  # applied to every row, before the row's own and the command line's
    rows: list[Row]


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


# ---------------------------------------------------------------------- loading

def _expect(cond: bool, path: Path, key: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"{path}: {key} must be {expected}, got {got!r}")


def _string_list(value: Any, path: Path, key: str) -> list[str]:
    value = [] if value is None else value
    _expect(isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value), path, key,
            "a list of key=value strings", value)
    return list(value)


def load_experiment(folder: str | os.PathLike) -> Experiment:
    """Read ``<folder>/experiment.yaml``; every problem is one line naming the file and key."""
    import yaml

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{folder}: not an experiment folder (no {MANIFEST})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    _expect(isinstance(raw, dict), path, "the top level", "a mapping", type(raw).__name__)
    unknown = set(raw) - {"title", "reference", "seeds", "overrides", "rows"}
    _expect(not unknown, path, "the top-level keys", "among title, reference, seeds, overrides, rows", sorted(unknown))
    seeds = raw.get("seeds", [0])
    _expect(isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds), path, "seeds",
            "a non-empty list of integers", seeds)
    rows_raw = raw.get("rows")
    _expect(isinstance(rows_raw, list) and rows_raw, path, "rows", "a non-empty list", rows_raw)
    rows, names = [], set()
    for i, r in enumerate(rows_raw):
        key = f"rows[{i}]"
        _expect(isinstance(r, dict) and {"name", "config"} <= set(r), path, key, "a mapping with name and config", r)
        unknown = set(r) - {"name", "label", "config", "overrides", "paper"}
        _expect(not unknown, path, f"{key} keys", "among name, label, config, overrides, paper", sorted(unknown))
        _expect(r["name"] not in names, path, f"{key}.name", "unique", r["name"])
        names.add(r["name"])
        config = folder / str(r["config"])
        _expect(config.is_file(), path, f"{key}.config", "an existing YAML file", str(config))
        paper = r.get("paper")
        _expect(paper is None or isinstance(paper, (int, float)), path, f"{key}.paper", "a number (mm)", paper)
        rows.append(Row(str(r["name"]), str(r.get("label", r["name"])), config,
                        _string_list(r.get("overrides"), path, f"{key}.overrides"),
                        None if paper is None else float(paper)))
    return Experiment(folder.resolve().name, folder, str(raw.get("title", folder.name)), str(raw.get("reference", "")),
                      list(seeds), _string_list(raw.get("overrides"), path, "overrides"), rows)


def row_config(exp: Experiment, row: Row, seed: int, overrides: list[str]) -> Any:
    """The resolved config of one (row, seed): defaults <- profile <- row YAML <- overrides."""
    from crossmodal.config import load_config

    return load_config(str(row.config), [*exp.overrides, *row.overrides, *overrides, f"seed={seed}"])


def config_key(cfg: Any) -> str:
    """A short hash of everything in the config that changes what a run computes."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    for dotted in NOT_HASHED:
        *parents, leaf = dotted.split(".")
        node = plain
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------- running

def git_commit() -> str:
    """``<sha>`` of the framework's checkout, ``+dirty`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def finished_outcome(row: Row, seed: int, run_dir: Path, records: Path | None = None) -> Outcome | None:
    """The outcome of an earlier invocation: from ``run_dir/run.json`` if the run folder is here,
    else from its record in ``records`` (the folder was trained on another machine), else None."""
    done = run_dir / "run.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return Outcome(row.name, seed, "reused", str(run_dir), info.get("wall_s"), info["metrics"],
                       validation_curve(run_dir), lr_curve(run_dir), commit=info.get("git_commit", ""),
                       train_epe=info.get("train_epe_mean"))
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
                   info["lr_curve"], commit=info["git_commit"], train_epe=info.get("train_epe_mean"))


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


def run_one(exp: Experiment, row: Row, seed: int, overrides: list[str], out_dir: Path, command: str,
            records: Path | None = None) -> Outcome:
    """Train and evaluate one (row, seed), or reuse its finished run; never raises (but Ctrl-C)."""
    from crossmodal.fit_check import TRAIN_FRAMES, training_frames_epe
    from crossmodal.io import atomic_write_text
    from crossmodal.train import train

    run_dir = None
    try:
        cfg = row_config(exp, row, seed, overrides)
        run_dir = out_dir / config_key(cfg)
        finished = finished_outcome(row, seed, run_dir, records)
        if finished is not None:
            return finished
        cfg.out_dir, cfg.name = str(out_dir), run_dir.name
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            cfg.resume = "true"  # interrupted earlier: go on from the last finished epoch
        start = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - start
        if result.metrics is None:
            raise CrossmodalError("training produced no checkpoint to evaluate")
        metrics = {k: result.metrics[k] for k in (*SUMMARY, "thresholds", "pck", "num_samples")}
        metrics = json.loads(json.dumps(metrics, default=lambda v: v.tolist() if hasattr(v, "tolist") else float(v)))
        train_epe = training_frames_epe(result.best_checkpoint)
        commit = git_commit()
        atomic_write_text(run_dir / "run.json", json.dumps({
            "experiment": exp.name, "row": row.name, "seed": seed, "wall_s": wall, "resumed": cfg.resume == "true",
            "git_commit": commit, "command": command, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "metrics": metrics, "train_epe_mean": train_epe, "train_frames": TRAIN_FRAMES,
        }, indent=2) + "\n")
        outcome = Outcome(row.name, seed, "done", str(run_dir), wall, metrics, validation_curve(run_dir),
                          lr_curve(run_dir), commit=commit, train_epe=train_epe)
        if records is not None:
            write_record(records, outcome)
        return outcome
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing row must not stop the others
        if run_dir is not None:
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        return Outcome(row.name, seed, "failed", str(run_dir or ""), error=_one_line(exc))


def _worker_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def prepare_data(configs: list[Any]) -> None:
    """Generate and cache each distinct dataset the configs need, once, before parallel runs: two
    runs building the same cache at once would race on its file."""
    from omegaconf import OmegaConf

    from crossmodal.train import build_datamodule

    seen = set()
    for cfg in configs:
        data = OmegaConf.to_container(cfg.data, resolve=True)
        key = json.dumps([data[k] for k in ("dataset", "root", "cache_dir", "synthetic", "preprocess")], sort_keys=True)
        if key not in seen:
            seen.add(key)
            build_datamodule(cfg).prepare_data()


def run_experiment(
    folder: str | os.PathLike,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    rows: list[str] | None = None,
    out_dir: str | os.PathLike = "runs/experiments",
    results_dir: str | os.PathLike = "experiments/results",
    command: str | None = None,
    jobs: int = 1,
    tables_only: bool = False,
    records_dir: str | os.PathLike | None = None,
) -> list[Outcome]:
    """Run every (row, seed) of an experiment, writing the results after each; see the module doc.

    ``jobs`` > 1 trains that many runs at once in worker processes, each with its share of the
    CPU threads (the Makefile's JOBS says what that gained on 2 cores). The data are prepared first.
    ``tables_only`` trains nothing: the tables are rewritten from the runs finished so far (a
    campaign spread over sessions records each table as its rows finish). ``records_dir`` holds
    the runs' records (default ``<results_dir>/runs``)."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    exp = load_experiment(folder)
    overrides = list(overrides or [])
    seeds = list(seeds) if seeds else exp.seeds
    chosen = exp.rows
    if rows:
        unknown = sorted(set(rows) - {r.name for r in exp.rows})
        if unknown:
            raise ConfigError(f"--rows: no row {unknown} in {exp.folder / MANIFEST}; rows: {', '.join(r.name for r in exp.rows)}")
        chosen = [r for r in exp.rows if r.name in rows]
    command = command or " ".join(shlex.quote(a) for a in ["python", "-m", "crossmodal", "experiment", str(folder), *overrides])
    # The table covers every row: rows left out by --rows, and rows this invocation has not reached
    # yet (it may be interrupted), show their earlier results, if any. Resolving every row's
    # config first also makes a typo in one fail now, not hours later.
    records = Path(records_dir) if records_dir is not None else Path(results_dir) / "runs"
    outcomes = {}
    for r in exp.rows:
        for s in seeds:
            run_dir = Path(out_dir) / config_key(row_config(exp, r, s, overrides))
            earlier = finished_outcome(r, s, run_dir, records)
            if earlier is not None and earlier.status == "reused" and (
                    earlier.train_epe is None or not record_path(records, run_dir).is_file()):
                measure_train_epe(earlier)  # finished by an older version, which measured less
                write_record(records, earlier)
            outcomes[(r.name, s)] = earlier or Outcome(r.name, s, "pending")
    start = time.perf_counter()
    # Seed by seed: an interrupted campaign leaves every row with the same number of seeds.
    order = [(r, s) for s in seeds for r in chosen]
    total = len(order)
    labels = {r.name: r.label for r in exp.rows}

    def record(i: int, outcome: Outcome) -> None:
        outcomes[(outcome.row, outcome.seed)] = outcome
        detail = {"done": f"EPE {outcome.metrics.get('epe_mean', math.nan):.2f} mm in {_duration(outcome.wall_s)}",
                  "reused": f"EPE {outcome.metrics.get('epe_mean', math.nan):.2f} mm, finished earlier in {outcome.run_dir}",
                  "recorded": f"EPE {outcome.metrics.get('epe_mean', math.nan):.2f} mm, trained earlier elsewhere "
                              f"(record {record_path(records, Path(outcome.run_dir))})",
                  "failed": f"{outcome.error} (traceback: {outcome.run_dir}/error.txt)"}[outcome.status]
        print(f"[{exp.name} {i}/{total}] {labels[outcome.row]} (seed {outcome.seed}): {outcome.status}: {detail}", flush=True)
        write_results(exp, exp.rows, list(outcomes.values()), Path(results_dir), command, seeds,
                      time.perf_counter() - start)

    if tables_only:
        write_results(exp, exp.rows, list(outcomes.values()), Path(results_dir), command, seeds, None)
        done = sum(o.status in FINISHED for o in outcomes.values())
        print(f"{exp.name}: tables rewritten from {done}/{len(outcomes)} finished runs; {Path(results_dir) / exp.name}.md")
        return [outcomes[(r.name, s)] for r in chosen for s in seeds]
    if jobs == 1:
        for i, (row, seed) in enumerate(order, 1):
            print(f"[{exp.name} {i}/{total}] {row.label} (seed {seed})", flush=True)
            record(i, run_one(exp, row, seed, overrides, Path(out_dir), command, records))
    else:
        _run_parallel(exp, order, overrides, Path(out_dir), command, jobs, outcomes, record, records)
    failed = [o for o in outcomes.values() if o.status == "failed"]
    print(f"{exp.name}: {total - len(failed)}/{total} selected runs finished; results in {Path(results_dir) / exp.name}.md")
    for o in failed:
        print(f"  FAILED {o.row} seed {o.seed}: {o.error}")
    return [outcomes[(r.name, s)] for r in chosen for s in seeds]


def _run_parallel(exp: Experiment, order: list[tuple[Row, int]], overrides: list[str], out_dir: Path, command: str,
                  jobs: int, outcomes: dict, record: Any, records: Path) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    todo = [(r, s) for r, s in order if outcomes[(r.name, s)].status == "pending"]
    for i, (row, seed) in enumerate(order, 1):  # finished runs are reported as the sequential path does
        if outcomes[(row.name, seed)].status != "pending":
            record(i, outcomes[(row.name, seed)])
    prepare_data([row_config(exp, r, s, overrides) for r, s in todo])
    index = {(r.name, s): i for i, (r, s) in enumerate(order, 1)}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # spawn: a forked child would inherit this process's torch thread pools and open HDF5 handles.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_threads,
                             initargs=(threads,)) as pool:
        running, queue = {}, iter(todo)

        def start_next() -> None:
            row, seed = next(queue, (None, None))
            if row is not None:
                print(f"[{exp.name} {index[(row.name, seed)]}/{len(order)}] {row.label} (seed {seed}), "
                      f"{jobs} at a time with {threads} thread(s) each", flush=True)
                running[pool.submit(run_one, exp, row, seed, overrides, out_dir, command, records)] = (row.name, seed)

        try:
            for _ in range(jobs):
                start_next()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    record(index[running.pop(future)], future.result())
                    start_next()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


# ---------------------------------------------------------------------- results

def _duration(seconds: float | None) -> str:
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
        # Converged (issue 13): the last validation within 2% of the run's best, in every seed.
        out["converged"] = all(c[-1] <= 1.02 * min(c) for c in curves)
        # What the last validation gained on the one before it, in % (a curve still falling steeply
        # at its end had more to learn, whatever the schedule did to the lr).
        out["val_last_gain_pct"] = float(np.mean([100 * (c[-2] - c[-1]) / c[-2] for c in curves if len(c) > 1])) \
            if any(len(c) > 1 for c in curves) else None
    fits = [o.train_epe for o in ok if o.train_epe is not None]
    if fits:  # on the runs' own training frames: underfitting or overfitting?
        out["train_epe"], out["train_epe_n"] = float(np.mean(fits)), len(fits)
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
             else f"- wall time of this invocation: {_duration(wall_s)}"]
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
                     "table: metrics and curves): their run folders went with the machine that trained them")
    lines += [f"- train+eval time of the finished runs (this and earlier invocations): {_duration(row_time)}",
              "- cells: mean ± sample standard deviation over the seeds that finished (n)",
              "- per seed: each seed's test EPE mean, in the order of the seeds column",
              "- val EPE first / best / last: the validation curve (mean over seeds); last gain: what the last "
              "validation gained on the one before; converged: the last validation within 2% of the best, "
              "in every seed; lr end / peak: below 1 when the schedule dropped or annealed the lr",
              f"- train EPE: on the first {TRAIN_FRAMES} training frames, the model's own (mean over the seeds "
              "measured, their number in brackets when not all): beside val EPE it tells underfitting from overfitting",
              "",
              "| Row | paper EPE (mm) | " + " | ".join(SUMMARY.values()) + " | per seed | seeds | val EPE first / best / "
              "last | last gain | converged | lr end / peak | train EPE | train+eval time |",
              "|---|---:|" + "---:|" * len(SUMMARY) + "---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        s = summaries[r.name]
        paper = f"{r.paper:.2f}" if r.paper is not None else "—"
        cells = [_cell(s, k, 2 if k.startswith("epe") else 3) for k in SUMMARY]
        per_seed = ", ".join(f"{v:.2f}" for v in s.get("epe_per_seed", [])) or "—"
        seeds_cell = ", ".join(str(v) for v in s.get("seeds", [])) or "—"
        lines.append(f"| {r.label} | {paper} | " + " | ".join(cells) + f" | {per_seed} | {seeds_cell} | "
                     + " | ".join(_val_cells(s)) + f" | {_train_cell(s)} | {_duration(s.get('wall_s'))} |")
    failed = [o for o in outcomes if o.status == "failed"]
    pending = [o for o in outcomes if o.status == "pending"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {o.row} seed {o.seed}: {o.error}" for o in failed]
    if pending:
        lines += ["", "Not run yet: " + ", ".join(f"{o.row} seed {o.seed}" for o in pending)]
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
