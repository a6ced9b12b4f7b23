"""Running an experiment: every (row, seed) in turn or a few at once, resuming what finished."""

from __future__ import annotations

import json
import math
import os
import shlex
import time
import traceback
from pathlib import Path
from typing import Any

from crossmodal.errors import ConfigError, CrossmodalError
from crossmodal.experiment.manifest import MANIFEST, Experiment, Row, config_key, load_experiment, row_config
from crossmodal.experiment.records import (FINISHED, SUMMARY, Outcome, finished_outcome, git_commit,
                                           measure_train_epe, record_path, write_record)
from crossmodal.experiment.tables import duration, write_results
from crossmodal.runlog import lr_curve, validation_curve


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def run_one(exp: Experiment, row: Row, seed: int, overrides: list[str], out_dir: Path, command: str,
            records: Path | None = None) -> Outcome:
    """Train and evaluate one (row, seed), or reuse its finished run; never raises (but Ctrl-C)."""
    import torch

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
        pretrain_s, pretrain_thread_s = _pretrained_trunk(cfg, row, out_dir) if row.pretrain else (0.0, 0.0)
        resumed = (run_dir / "checkpoints" / "last.ckpt").is_file()
        if resumed:
            cfg.resume = "true"  # interrupted earlier: go on from the last finished epoch
        start = time.perf_counter()
        result = train(cfg)
        # A row's first run builds its cache (18 min for 32000 frames): a one-off cost, not the
        # row's training time, so it is kept apart as prepare_s.
        part = time.perf_counter() - start - result.prepare_s
        # A resumed run's cost includes its interrupted parts, which may have had other thread counts;
        # a pre-trained row's includes its pre-training, also when another row of its seed made it.
        wall = result.earlier_s + part + pretrain_s
        thread_s = result.earlier_thread_s + part * torch.get_num_threads() + pretrain_thread_s
        if result.metrics is None:
            raise CrossmodalError("training produced no checkpoint to evaluate")
        kept = (*SUMMARY, "thresholds", "pck", "num_samples")
        metrics = {k: v for k, v in result.metrics.items() if k in kept or k.startswith(("limits_broken", "limits_excess"))}
        metrics = json.loads(json.dumps(metrics, default=lambda v: v.tolist() if hasattr(v, "tolist") else float(v)))
        train_epe = training_frames_epe(result.best_checkpoint)
        commit = git_commit()
        # thread_s is the run's cost in time of one thread: campaigns mix 1- and 2-thread runs.
        # torch_threads is this process's. prepare_s (data and caches) is in neither wall_s nor thread_s.
        atomic_write_text(run_dir / "run.json", json.dumps({
            "experiment": exp.name, "row": row.name, "seed": seed, "wall_s": wall, "resumed": resumed,
            "git_commit": commit, "command": command, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "metrics": metrics, "train_epe_mean": train_epe, "train_frames": TRAIN_FRAMES,
            "torch_threads": torch.get_num_threads(), "thread_s": thread_s, "prepare_s": result.prepare_s,
            **({"pretrain_s": pretrain_s} if row.pretrain else {}),
            # The bounds its pose losses were given (from the labelled frames alone), kept with the record.
            **({"pose_limits": json.loads((run_dir / "pose_limits.json").read_text())}
               if (run_dir / "pose_limits.json").is_file() else {}),
        }, indent=2) + "\n")
        outcome = Outcome(row.name, seed, "done", str(run_dir), wall, metrics, validation_curve(run_dir),
                          lr_curve(run_dir), commit=commit, train_epe=train_epe, threads=torch.get_num_threads(),
                          resumed=resumed, thread_s=thread_s)
        if records is not None:
            write_record(records, outcome)
        return outcome
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing row must not stop the others
        if run_dir is not None:
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        return Outcome(row.name, seed, "failed", str(run_dir or ""), error=_one_line(exc))


def _pretrained_trunk(cfg: Any, row: Row, out_dir: Path) -> tuple[float, float]:
    """Point the row's RGB trunk at its pre-training under ``out_dir``, running it when missing;
    that pre-training's wall and one-thread seconds."""
    import torch

    from crossmodal.experiment.manifest import pretrain_settings
    from crossmodal.pretrain import pretrain

    options = cfg.model.encoder_options.rgb_resnet18
    trunk = out_dir / str(options.pretrained_path)
    record_path = trunk.parent / "pretrain.json"
    if not (trunk.is_file() and record_path.is_file()):
        pretrain(cfg, pretrain_settings(row.pretrain), trunk.parent)
    options.pretrained_path = str(trunk)
    record = json.loads(record_path.read_text())
    return float(record["wall_s"]), float(record["wall_s"]) * int(record.get("torch_threads", torch.get_num_threads()))


def _worker_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def prepare_data(configs: list[Any]) -> None:
    """Generate and cache each distinct dataset the configs need, once, before parallel runs: two
    runs building the same cache at once would race on its file."""
    from omegaconf import OmegaConf

    from crossmodal.data.datamodule import build_datamodule

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
    campaign spread over machines records each table as its rows finish). ``records_dir`` holds
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
            if earlier is not None and earlier.status == "reused":
                missing = earlier.train_epe is None
                if missing:
                    measure_train_epe(earlier)  # finished by an older version, which measured less
                # Written when absent or newly measured, not on every invocation.
                if not record_path(records, run_dir).is_file() or (missing and earlier.train_epe is not None):
                    write_record(records, earlier)
            outcomes[(r.name, s)] = earlier or Outcome(r.name, s, "pending")
    start = time.perf_counter()
    # Seed by seed: an interrupted campaign leaves every row with the same number of seeds.
    order = [(r, s) for s in seeds for r in chosen]
    total = len(order)
    labels = {r.name: r.label for r in exp.rows}

    def record(i: int, outcome: Outcome) -> None:
        outcomes[(outcome.row, outcome.seed)] = outcome
        detail = {"done": f"EPE {outcome.metrics.get('epe_mean', math.nan):.2f} mm in {duration(outcome.wall_s)}",
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
