"""What a campaign has left to train: each unfinished (row, seed) with an estimate of its time.

A campaign of many CPU hours runs as queues of ``<folder>:<row>:<seed>`` items
(``scripts/campaign.sh``), possibly on several machines in turn; this lists them in that form, so
that the queues are planned from measured times rather than from memory. A run shared by two experiments (Table 1's
S4 is Fig. 8's 100 % row) is listed once, under the first folder that names it.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from crossmodal.checkpoints import load_weights_only
from crossmodal.errors import ConfigError
from crossmodal.experiment.manifest import Row, config_key, load_experiment, pretrain_folder, pretrain_settings, row_config
from crossmodal.experiment.records import FINISHED, finished_outcome
from crossmodal.experiment.tables import duration


@dataclass
class Planned:
    """One (row, seed) still to train."""

    folder: str
    row: str
    seed: int
    key: str  # the run's hash: its folder under --out and its record's name
    estimate_s: float | None  # median wall time of the row's finished seeds, else of runs of its kind,
    # else of an epoch of its model's runs x its epochs; less the part an interrupted run has trained
    basis: str  # what the estimate rests on
    resumable: bool  # an interrupted run whose last checkpoint is here
    trained: float | None = None  # the fraction of its batches a resumable run has trained, where known

    @property
    def item(self) -> str:
        return f"{self.folder}:{self.row}:{self.seed}"


@dataclass
class Plan:
    planned: list[Planned]  # the runs left, in the runner's order
    total: int  # distinct runs in the experiments
    finished_cost_s: float  # the finished runs' cost in time of one thread (Outcome.cost_s)


def _median(walls: list[float]) -> float | None:
    return statistics.median(walls) if walls else None


def trained_fraction(loops: dict, max_epochs: int) -> float | None:
    """How much of its training an interrupted run has done, from its checkpoint's fit-loop
    counters: batches trained over those of all its epochs. An epoch's length is known once one
    epoch has been trained in full, so a run stopped in its first epoch gives None."""
    batches = loops["epoch_loop.batch_progress"]
    done, in_epoch = batches["total"]["completed"], batches["current"]["completed"]
    if batches["is_last_batch"]:  # saved at the end-of-epoch validation: this epoch is whole
        per_epoch = in_epoch
    else:
        whole = loops["epoch_progress"]["current"]["started"] - 1
        if whole < 1:
            return None
        per_epoch = (done - in_epoch) / whole
    return min(1.0, done / (per_epoch * max_epochs)) if per_epoch > 0 else None


def _checkpoint_fraction(path: Path, max_epochs: int) -> float | None:
    try:
        return trained_fraction(load_weights_only(path)["loops"]["fit_loop"], max_epochs)
    except (ConfigError, KeyError, TypeError):  # not a checkpoint of this trainer: plan it whole
        return None


def _model(cfg) -> str:
    model = cfg.model
    return f"{model.strategy} {'+'.join(model.encoders)}->{'+'.join(model.decoders)}"


def _kind(cfg) -> str:
    """What a run's time depends on most: its model and its length (not its data's content)."""
    return f"{_model(cfg)}, {cfg.trainer.max_epochs} epochs"


def plan_runs(folders: list[str | os.PathLike], overrides: list[str] | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, out_dir: str | os.PathLike = "runs/experiments",
              records_dir: str | os.PathLike = "experiments/results/runs") -> Plan:
    """The unfinished runs of the experiments (in the runner's order: seed by seed), how many
    distinct runs they hold in all, and what the finished ones cost. A run's estimate is the median
    wall time of its row's finished seeds, else of the finished runs of the same model and length in
    these experiments, else its epochs times the median epoch of that model's runs of other lengths
    (an epoch is one pass over the training frames, whatever the batch); wall times are those of
    the machines that trained them, and only of runs trained in one process with one torch thread."""
    overrides, records, out = list(overrides or []), Path(records_dir), Path(out_dir)
    by_row: dict[tuple[str, str], list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    per_epoch: dict[str, list[float]] = {}  # by model: wall time of an epoch, one pass over the frames
    pending, seen, names, cost = [], set(), set(), 0.0
    for folder in folders:
        exp = load_experiment(folder)
        names |= {r.name for r in exp.rows}
        folder = str(folder).rstrip("/")
        for seed in list(seeds) if seeds else exp.seeds:
            for row in exp.rows:
                if rows and row.name not in rows:
                    continue
                cfg = row_config(exp, row, seed, overrides)
                key = config_key(cfg)
                if key in seen:
                    continue
                seen.add(key)
                done = finished_outcome(row, seed, out / key, records)
                if done is None or done.status not in FINISHED:
                    pending.append((folder, row.name, seed, key, cfg))
                    continue
                cost += done.cost_s or 0.0
                # The plan is in time of one thread; a 2-thread run's wall time is neither half nor
                # all of that (2 threads ran S1 2.2x faster than 1 thread beside another run), and a
                # resumed run's parts may have had different thread counts.
                if done.wall_s is not None and done.threads == 1 and not done.resumed:
                    by_row.setdefault((folder, row.name), []).append(done.wall_s)
                    by_kind.setdefault(_kind(cfg), []).append(done.wall_s)
                    per_epoch.setdefault(_model(cfg), []).append(done.wall_s / cfg.trainer.max_epochs)
    pretrain_step_s = _pretrain_step_seconds(out)
    unknown = sorted(set(rows or ()) - names)
    if unknown:
        raise ConfigError(f"--rows: no row {unknown} in {', '.join(str(f) for f in folders)}")
    planned, charged = [], set()
    for folder, name, seed, key, cfg in pending:
        kind, max_epochs = _kind(cfg), cfg.trainer.max_epochs
        own, alike, epochs = by_row.get((folder, name), []), by_kind.get(kind, []), per_epoch.get(_model(cfg), [])
        if own or alike:
            estimate = _median(own) or _median(alike)
            basis = f"median of {len(own)} finished {name} run(s)" if own else f"median of {len(alike)} finished run(s) of {kind}"
        elif epochs:  # the same model trained for another length: time goes with the passes over the frames
            estimate = _median(epochs) * max_epochs
            basis = f"{max_epochs} x the median epoch of {len(epochs)} finished run(s) of {_model(cfg)}"
        else:
            estimate, basis = None, f"no finished run of {kind}"
        last = out / key / "checkpoints" / "last.ckpt"
        trained = _checkpoint_fraction(last, max_epochs) if last.is_file() else None
        if estimate is not None and trained is not None:
            # Work after the last checkpoint is redone on resume, so it does not count as done.
            estimate, basis = estimate * (1.0 - trained), f"{basis}, less the {trained:.0%} trained"
        row = next(r for r in load_experiment(folder).rows if r.name == name)
        if row.pretrain and not own:  # a finished seed's wall time already holds its pre-training
            estimate, basis = _with_pretraining(estimate, basis, out / pretrain_folder(cfg, row), row, pretrain_step_s,
                                                charged)
        planned.append(Planned(folder, name, seed, key, estimate, basis, last.is_file(), trained))
    return Plan(planned, len(seen), cost)


def _pretrain_step_seconds(out: Path) -> float | None:
    """Median one-thread seconds a pre-training step over the pre-trainings finished under ``out``."""
    steps = []
    for record_path in out.glob("pretrain-*/pretrain.json"):
        record = json.loads(record_path.read_text())
        steps.append(record["wall_s"] * record.get("torch_threads", 1) / record["settings"]["steps"])
    return _median(steps)


def _with_pretraining(estimate: float | None, basis: str, folder: Path, row: Row, step_s: float | None,
                      charged: set[Path]) -> tuple[float | None, str]:
    """A pre-training row's estimate plus its pre-training, unless that is done or already counted
    for another row of the plan (rows of one seed and data share it)."""
    if (folder / "pretrain.json").is_file():
        return estimate, f"{basis}; its pre-training is done"
    if folder in charged:
        return estimate, f"{basis}; its pre-training is counted with another row"
    charged.add(folder)
    steps = pretrain_settings(row.pretrain).steps
    if step_s is None or estimate is None:
        return estimate, f"{basis}; plus {steps} pre-training steps, not estimated until a pre-training has run"
    return estimate + steps * step_s, f"{basis}, plus {steps} pre-training steps at {step_s:.1f} s"


def plan_text(plan: Plan) -> str:
    """The plan as printed by ``python -m crossmodal experiment ... --plan``."""
    planned, total = plan.planned, plan.total
    lines = [f"{total - len(planned)} of {total} distinct runs finished ({duration(plan.finished_cost_s)} of one "
             f"thread); {len(planned)} to train:"]
    width = max((len(p.item) for p in planned), default=0)
    for p in planned:
        resumed = ", resumes from its last checkpoint" if p.resumable else ""
        estimate = "no estimate" if p.estimate_s is None else f"~{duration(p.estimate_s)}"
        lines.append(f"  {p.item:<{width}}  {estimate} ({p.basis}{resumed})")
    known = [p.estimate_s for p in planned if p.estimate_s is not None]
    unknown = len(planned) - len(known)
    lines.append(f"estimated: {duration(sum(known))} of one thread for {len(known)} run(s)"
                 + (f"; {unknown} without an estimate" if unknown else "")
                 + ". Two queues of scripts/campaign.sh on 2 cores take about half of it in clock time.")
    return "\n".join(lines)
