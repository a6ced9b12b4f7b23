"""The experiment runner on a miniature experiment: real training runs of a few steps each."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from crossmodal.cli import main
from crossmodal.errors import ConfigError
from crossmodal.experiment import FINISHED, Outcome, config_key, load_experiment, row_config, run_experiment
from crossmodal.experiment.claims import check_claims, claims_markdown, welch_p

from conftest import raises_one_line

ROOT = Path(__file__).resolve().parent.parent
# Every shipped experiment folder, so that a new one is checked without editing this list.
PAPER_EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/experiment.yaml"))

MANIFEST = """\
title: "Miniature: S1 against S4"
reference: "made up for the test"
seeds: [0]
rows:
  - {name: s1, label: "S1 R→P", config: s1.yaml, paper: 16.61}
  - {name: broken, label: "S4 with an infinite heatmap weight", config: s4.yaml, overrides: [model.lambda_heat=inf]}
  - {name: s4, label: "S4 R+C→C+H+P", config: s4.yaml, paper: 13.14}
"""


@pytest.fixture
def miniature(tmp_path: Path) -> Path:
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "experiment.yaml").write_text(MANIFEST)
    (folder / "s1.yaml").write_text("model: {strategy: crossmodal, encoders: [rgb_resnet18], decoders: [pose_mlp]}\n")
    (folder / "s4.yaml").write_text("model: {strategy: poe}\n")
    return folder


def run(folder: Path, tiny_data: list[str], tmp_path: Path, **kwargs):
    overrides = [*tiny_data, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    return run_experiment(folder, overrides, out_dir=tmp_path / "runs", results_dir=tmp_path / "results", **kwargs)


def test_runner_writes_results_resumes_and_isolates_failures(miniature, tiny_data, tmp_path, single_thread):
    outcomes = run(miniature, tiny_data, tmp_path)
    status = {o.row: o.status for o in outcomes}
    assert status == {"s1": "done", "broken": "failed", "s4": "done"}  # the failure did not stop s4
    broken = next(o for o in outcomes if o.row == "broken")
    assert "NonFiniteLossError" in broken.error and "heatmaps" in broken.error and "\n" not in broken.error
    assert (Path(broken.run_dir) / "error.txt").read_text().startswith("Traceback")

    results = tmp_path / "results"
    table = (results / "mini.md").read_text()
    assert "| S1 R→P | 16.61 |" in table and "| S4 R+C→C+H+P | 13.14 |" in table
    assert "Failed runs:" in table and "broken seed 0" in table
    lines = list(csv.DictReader((results / "mini.csv").open()))
    assert [(r["row"], r["status"]) for r in lines] == [("s1", "done"), ("broken", "failed"), ("s4", "done")]
    for r in lines:
        if r["status"] == "done":
            assert 0.0 < float(r["epe_mean"]) < 1000.0 and 0.0 <= float(r["auc_0_50"]) <= 1.0
    data = json.loads((results / "mini.json").read_text())
    assert data["rows"][0]["summary"]["n"] == 1 and len(data["rows"][0]["summary"]["pck"]) == 20
    assert len(data["rows"][0]["runs"][0]["val_curve"]) >= 1  # read back from the run's CSV log
    assert (results / "mini_pck.png").stat().st_size > 0 and (results / "mini_curves.png").stat().st_size > 0

    # A second invocation reuses the finished runs (their records untouched) and retries the failure.
    records = {o.row: Path(o.run_dir) / "run.json" for o in outcomes if o.status == "done"}
    stamps = {row: p.stat().st_mtime_ns for row, p in records.items()}
    again = run(miniature, tiny_data, tmp_path)
    assert {o.row: o.status for o in again} == {"s1": "reused", "broken": "failed", "s4": "reused"}
    assert {row: p.stat().st_mtime_ns for row, p in records.items()} == stamps
    assert [o.metrics["epe_mean"] for o in again if o.row == "s1"] == [o.metrics["epe_mean"] for o in outcomes if o.row == "s1"]

    # Running one row still writes the whole table: the other rows keep their earlier results.
    (only,) = run(miniature, tiny_data, tmp_path, rows=["s1"])
    assert only.status == "reused"
    lines = list(csv.DictReader((results / "mini.csv").open()))
    assert [(r["row"], r["status"]) for r in lines] == [("s1", "reused"), ("broken", "pending"), ("s4", "reused")]


def test_interrupted_run_resumes_from_its_last_checkpoint(miniature, tiny_data, tmp_path, single_thread):
    (first,) = run(miniature, tiny_data, tmp_path, rows=["s1"])
    record = Path(first.run_dir) / "run.json"
    record.unlink()  # as if the process died after the last checkpoint, before the records
    (tmp_path / "results" / "runs" / f"{Path(first.run_dir).name}.json").unlink()
    # The interrupted part's clock, as if it had run 1000 s at 2 threads (crossmodal.clock).
    last = Path(first.run_dir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["callbacks"]["TrainingClock"]["fit_s"] > 0.0
    ckpt["callbacks"]["TrainingClock"] = {"fit_s": 1000.0, "thread_s": 2000.0}
    torch.save(ckpt, last)
    start = time.perf_counter()
    (second,) = run(miniature, tiny_data, tmp_path, rows=["s1"])
    elapsed = time.perf_counter() - start
    assert second.status == "done" and second.run_dir == first.run_dir
    info = json.loads(record.read_text())
    assert info["resumed"] is True and second.resumed
    assert info["torch_threads"] == 1  # the single_thread fixture's
    # Its cost includes the interrupted part; this part ran at one thread.
    part = info["wall_s"] - 1000.0
    assert 0.0 < part < elapsed and info["thread_s"] == pytest.approx(2000.0 + part)
    assert 0.0 <= json.loads(record.read_text())["prepare_s"]  # data and caches, timed apart from wall_s


def test_table_written_mid_invocation_keeps_rows_not_reached_yet(miniature, tiny_data, tmp_path, single_thread, monkeypatch):
    import crossmodal.experiment.runner as experiment

    run(miniature, tiny_data, tmp_path, rows=["s1", "s4"])
    real_run_one = experiment.run_one

    def interrupted_at_s4(exp, row, *args, **kwargs):
        if row.name == "s4":
            raise KeyboardInterrupt  # Ctrl-C during the last row
        return real_run_one(exp, row, *args, **kwargs)

    monkeypatch.setattr(experiment, "run_one", interrupted_at_s4)
    with pytest.raises(KeyboardInterrupt):
        run(miniature, tiny_data, tmp_path)
    lines = list(csv.DictReader((tmp_path / "results" / "mini.csv").open()))
    assert [(r["row"], r["status"]) for r in lines] == [("s1", "reused"), ("broken", "failed"), ("s4", "reused")]


def test_tables_only_trains_nothing_and_records_the_runs_commits(miniature, tiny_data, tmp_path, single_thread):
    """A campaign records its tables from the finished runs without training the rest."""
    stale = tmp_path / "results" / "mini_pck.png"
    stale.parent.mkdir()
    stale.write_bytes(b"from another campaign")
    run(miniature, tiny_data, tmp_path, tables_only=True)
    assert not stale.exists()  # nothing finished: no figure that the table contradicts
    run(miniature, tiny_data, tmp_path, rows=["s1"])
    outcomes = run(miniature, tiny_data, tmp_path, tables_only=True)
    assert {o.row: o.status for o in outcomes} == {"s1": "reused", "broken": "pending", "s4": "pending"}
    assert not any((tmp_path / "runs").glob("*/error.txt"))  # the broken row was not attempted
    assert len([p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]) == 1
    table = (tmp_path / "results" / "mini.md").read_text()
    assert "`--tables-only`" in table and "Not run yet: broken seed 0, s4 seed 0" in table
    commit = json.loads((Path(outcomes[0].run_dir) / "run.json").read_text())["git_commit"]
    assert f"- commits that trained the runs: `{commit}` (1)" in table


def test_recorded_runs_stand_in_for_run_folders_lost_with_their_machine(miniature, tiny_data, tmp_path, single_thread):
    """runs/ does not survive a change of machine: each finished run leaves a record beside the
    tables, and a later invocation counts it as finished instead of training it again."""
    (first,) = run(miniature, tiny_data, tmp_path, rows=["s1"])
    record = tmp_path / "results" / "runs" / f"{Path(first.run_dir).name}.json"
    kept = json.loads(record.read_text())
    assert kept["metrics"]["epe_mean"] == first.metrics["epe_mean"] and kept["val_curve"] == first.val_curve
    assert kept["lr_curve"] == first.lr_curve and kept["git_commit"] == first.commit and kept["seed"] == 0
    assert kept["train_epe_mean"] == first.train_epe and 0.0 < first.train_epe < 1000.0

    shutil.rmtree(tmp_path / "runs")  # a new machine: only the repository's files are left
    (again,) = run(miniature, tiny_data, tmp_path, rows=["s1"])
    assert again.status == "recorded" and not (tmp_path / "runs").exists()  # nothing trained
    assert again.metrics == first.metrics and again.val_curve == first.val_curve and again.wall_s == first.wall_s
    table = (tmp_path / "results" / "mini.md").read_text()
    assert f"| S1 R→P | 16.61 | {first.metrics['epe_mean']:.2f} |" in table
    assert "1 of the finished runs are known from their records only" in table
    outcomes = run(miniature, tiny_data, tmp_path, tables_only=True)
    assert [o.status for o in outcomes] == ["recorded", "pending", "pending"]

    assert f"| {first.train_epe:.2f} |" in table

    # A run folder finished by an older version, without a record or a train EPE, gets both on the
    # next invocation: the EPE measured on the checkpoint it kept.
    (second,) = run(miniature, tiny_data, tmp_path, rows=["s4"], records_dir=tmp_path / "elsewhere")
    done = Path(second.run_dir) / "run.json"
    info = json.loads(done.read_text())
    done.write_text(json.dumps({k: v for k, v in info.items() if not k.startswith("train_")}))
    outcomes = run(miniature, tiny_data, tmp_path, tables_only=True)
    assert outcomes[2].train_epe == pytest.approx(second.train_epe, rel=1e-6)
    kept = json.loads((tmp_path / "results" / "runs" / f"{Path(second.run_dir).name}.json").read_text())
    assert kept["train_epe_mean"] == pytest.approx(second.train_epe, rel=1e-6)
    assert json.loads(done.read_text())["train_epe_mean"] == kept["train_epe_mean"]


@pytest.mark.parametrize("text, fragments", [("{", ["not a valid run record"]),
                                             ('{"metrics": {}}', ["needs", "val_curve", "missing"])])
def test_bad_run_records_are_one_line_errors(miniature, tiny_data, tmp_path, text, fragments):
    exp = load_experiment(miniature)
    key = config_key(row_config(exp, exp.rows[0], 0, [*tiny_data, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                                                       "trainer.limit_val_batches=1"]))
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / f"{key}.json").write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        run(miniature, tiny_data, tmp_path, tables_only=True)
    raises_one_line(excinfo, f"{key}.json", "delete it to retrain", *fragments)


def test_shipped_tables_have_a_record_for_every_finished_run():
    """The shipped tables can be rewritten on any machine: every run they report is recorded."""
    for path in sorted((ROOT / "experiments" / "results").glob("*.json")):
        for row in json.loads(path.read_text())["rows"]:
            for outcome in row["runs"]:
                if outcome["status"] in FINISHED:
                    record = ROOT / "experiments" / "results" / "runs" / f"{Path(outcome['run_dir']).name}.json"
                    assert record.is_file(), f"{path.name}: {row['name']} seed {outcome['seed']} has no record"
                    kept = json.loads(record.read_text())
                    assert kept["metrics"]["epe_mean"] == outcome["metrics"]["epe_mean"]
                    assert kept["val_curve"] == outcome["val_curve"]


def test_parallel_runs_match_sequential_ones(miniature, tiny_data, tmp_path, single_thread):
    """jobs=2 trains in worker processes (one thread each here): the same runs, the same numbers, the
    failure still isolated, and the table holds every row."""
    sequential = {o.row: o for o in run(miniature, tiny_data, tmp_path / "one")}
    parallel = {o.row: o for o in run(miniature, tiny_data, tmp_path / "two", jobs=2)}
    assert {k: o.status for k, o in parallel.items()} == {"s1": "done", "broken": "failed", "s4": "done"}
    for row in ("s1", "s4"):
        assert Path(parallel[row].run_dir).name == Path(sequential[row].run_dir).name  # same config hash
        assert parallel[row].metrics["epe_mean"] == pytest.approx(sequential[row].metrics["epe_mean"], rel=1e-5)
        assert len(parallel[row].val_curve) >= 1 and len(parallel[row].lr_curve) >= 1
    assert "NonFiniteLossError" in parallel["broken"].error
    lines = list(csv.DictReader((tmp_path / "two" / "results" / "mini.csv").open()))
    assert [(r["row"], r["status"]) for r in lines] == [("s1", "done"), ("broken", "failed"), ("s4", "done")]


def test_seeds_and_rows_select_runs(miniature, tiny_data, tmp_path):
    exp = load_experiment(miniature)
    keys = {config_key(row_config(exp, exp.rows[0], seed, tiny_data)) for seed in (0, 1)}
    assert len(keys) == 2  # the seed is part of what a run computes
    moved = row_config(exp, exp.rows[0], 0, [*tiny_data, "out_dir=elsewhere", "trainer.progress=true"])
    assert config_key(moved) == config_key(row_config(exp, exp.rows[0], 0, tiny_data))  # where it lives is not
    with pytest.raises(ConfigError) as excinfo:
        run(miniature, tiny_data, tmp_path, rows=["s9"])
    raises_one_line(excinfo, "--rows", "s9", "s1, broken, s4")


@pytest.mark.parametrize(
    "manifest, fragments",
    [
        ("rows: []\n", ["rows", "non-empty list"]),
        ("rows:\n  - {name: a, config: missing.yaml}\n", ["rows[0].config", "missing.yaml"]),
        ("rows:\n  - {name: a, config: s1.yaml, colour: red}\n", ["rows[0] keys", "colour"]),
        ("seeds: one\nrows:\n  - {name: a, config: s1.yaml}\n", ["seeds", "integers"]),
        ("rows:\n  - {name: a, config: s1.yaml, overrides: [seed]}\n", ["rows[0].overrides", "key=value"]),
        ("rows: [\n", ["not valid YAML"]),
        ("rows:\n  - {name: a, config: s1.yaml}\nclaims:\n  - {text: t, ratio: [a, b], at_most: 1}\n",
         ["claims[0].ratio", "rows of this experiment"]),
        ("rows:\n  - {name: a, config: s1.yaml}\nclaims:\n  - {text: t, ratio: [a, a]}\n", ["claims[0].at_most"]),
        ("rows:\n  - {name: a, config: s1.yaml}\nclaims:\n  - {text: t, decreasing: [a]}\n",
         ["claims[0].decreasing", "two or more"]),
        ("rows:\n  - {name: a, config: s1.yaml}\nclaims:\n  - {ratio: [a, a], at_most: 1}\n", ["claims[0]", "text"]),
    ],
)
def test_bad_manifests_are_one_line_errors(miniature, manifest, fragments):
    (miniature / "experiment.yaml").write_text(manifest)
    with pytest.raises(ConfigError) as excinfo:
        load_experiment(miniature)
    raises_one_line(excinfo, "experiment.yaml", *fragments)


def test_claims_are_judged_on_the_seeds_every_row_finished(miniature):
    """Ratio and order claims: the verdict on the means over common seeds, each seed's own verdict,
    provisional while seeds are missing (outcomes as the runner records them)."""
    (miniature / "experiment.yaml").write_text(MANIFEST.replace("seeds: [0]", "seeds: [0, 1, 2]") + """\
claims:
  - {text: "S4 <= 0.8 x S1", ratio: [s4, s1], at_most: 0.8}
  - {text: "S1 > broken > S4", decreasing: [s1, broken, s4]}
""")
    exp = load_experiment(miniature)

    def done(row, seed, epe):
        return Outcome(row, seed, "recorded", metrics={"epe_mean": epe})

    outcomes = [done("s1", 0, 20.0), done("s4", 0, 15.0), done("s1", 1, 20.0), done("s4", 1, 17.0),
                done("s1", 2, 10.0), Outcome("s4", 2, "pending"), done("broken", 0, 18.0)]
    ratio, order = check_claims(exp, outcomes)
    assert ratio["seeds"] == [0, 1] and ratio["ratio"] == pytest.approx(16.0 / 20.0)  # seed 2 lacks S4
    assert ratio["holds"] and ratio["per_seed"] == [True, False]  # 0.75 and 0.85
    assert order["seeds"] == [0] and order["holds"] and order["per_seed"] == [True]
    lines = "\n".join(claims_markdown(exp, [ratio, order]))
    assert "| S4 <= 0.8 x S1 | S4 R+C→C+H+P / S1 R→P = 0.800 (bound 0.8) | 0.750, 0.850 (seeds 0, 1) |" in lines
    assert "**holds** (provisional: 2 of 3 seeds) | 1 of 2 |" in lines
    assert "S1 R→P 20.00 > S4 with an infinite heatmap weight 18.00 > S4 R+C→C+H+P 15.00 mm" in lines
    assert ratio["pairs"] == [{"rows": ["s4", "s1"], "difference": pytest.approx(-4.0),
                               "p": pytest.approx(welch_p([15.0, 17.0], [20.0, 20.0]))}]
    assert order["pairs"][0]["p"] is None  # one seed: no spread to judge by
    assert f"| S4 R+C→C+H+P − S1 R→P -4.00 mm (p = {ratio['pairs'][0]['p']:.3f}) |" in lines
    assert "| S1 R→P − S4 with an infinite heatmap weight +2.00 mm (—); " in lines
    outcomes[1] = done("s4", 0, 25.0)
    ratio, order = check_claims(exp, outcomes)
    assert not ratio["holds"] and not order["holds"]
    assert "≤ S4 R+C→C+H+P 25.00 mm | no (seed 0) | **fails** (provisional: 1 of 3 seeds) | 1 of 1 |" in \
        "\n".join(claims_markdown(exp, [ratio, order]))
    apart = [done(r, s, e + d) for s, d in enumerate((0.0, 0.1, -0.1)) for r, e in (("s1", 20.0), ("s4", 25.0))]
    assert "S4 R+C→C+H+P − S1 R→P +5.00 mm (p < 0.001) |" in "\n".join(claims_markdown(exp, check_claims(exp, apart)))
    assert check_claims(exp, [])[0]["seeds"] == [] and "| not run yet |" in "\n".join(claims_markdown(exp, check_claims(exp, [])))


def _welch_naive(a, b):
    import scipy.stats
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * scipy.stats.t.sf(abs(t), df)


@pytest.mark.parametrize("a, b", [([16.74, 16.81, 16.96], [17.33, 17.04, 17.14]),  # Table 1's S1, S4
                                  ([1.0, 2.0], [1.5, 2.5, 3.5, 9.0]), ([3.0, 3.1, 2.9], [3.0, 3.2, 2.8])])
def test_welch_p_matches_the_textbook_formula(a, b):
    assert welch_p(a, b) == pytest.approx(_welch_naive(a, b), rel=1e-9)
    assert welch_p(a, b) == pytest.approx(welch_p(b, a))


def test_welch_p_edges():
    assert welch_p([1.0], [1.0, 2.0]) is None and welch_p([], []) is None
    assert welch_p([2.0, 2.0], [2.0, 2.0]) == 1.0 and welch_p([2.0, 2.0], [3.0, 3.0]) == 0.0
    assert 0.0 < welch_p([2.0, 2.0], [3.0, 3.5]) < 1.0


def test_cli_errors(tmp_path, capsys):
    assert main(["experiment", "profile=cpu"]) == 2
    assert "name at least one experiment folder" in capsys.readouterr().err
    assert main(["experiment", str(tmp_path)]) == 2
    assert "not an experiment folder" in capsys.readouterr().err


@pytest.mark.parametrize("name", PAPER_EXPERIMENTS)
def test_paper_experiments_resolve_under_both_profiles(name):
    """Every shipped row builds a valid config with the CPU and the GPU profile."""
    exp = load_experiment(ROOT / "experiments" / name)
    extra = ["data.root=/data/somewhere"] if name == "table2" else []
    for profile in ("cpu", "gpu"):
        keys = [config_key(row_config(exp, row, 0, [f"profile={profile}", *extra])) for row in exp.rows]
        assert len(set(keys)) == len(keys), f"{name}: two rows compute the same thing"
    if name != "table2" and not name.endswith("_pilot"):  # the CPU campaign: trained until it has finished learning
        assert {row_config(exp, row, 0, []).profile for row in exp.rows} == {"cpu-long"}
    if name.endswith("_pilot"):  # a pilot chooses a campaign's settings on the 15-minute profile first
        assert {row_config(exp, row, 0, []).profile for row in exp.rows} == {"cpu"}


def test_make_experiments_covers_every_cpu_experiment():
    """`make experiments` and `make plan` are the campaign's one command: every shipped experiment
    that runs on the synthetic hands is in the Makefile's EXPERIMENTS (Table 2 needs real data)."""
    import re

    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    (listed,) = re.findall(r"^EXPERIMENTS \?= (.*)$", text, flags=re.M)
    assert sorted(Path(f).name for f in listed.split()) == [n for n in PAPER_EXPERIMENTS if n != "table2"]


def test_shipped_experiments_share_runs_with_table1():
    """Rows that repeat a Table 1 row are the same run (one hash), so they train once."""
    table1 = load_experiment(ROOT / "experiments" / "table1")
    keys = {row.name: config_key(row_config(table1, row, 0, [])) for row in table1.rows}
    shared = {"budget": {"s1_e6": "s1_r_p", "s4_e6": "s4_rc_chp"},
              "keypoint_stage": {"s1_kp": "s1_r_p", "s4_kp": "s4_rc_chp"},
              "fig8_weak": {"full_100": "s4_rc_chp"},
              "s3_alignment_weight": {"beta_prime_1": "s3_rc_chp"}}
    for name, pairs in shared.items():
        exp = load_experiment(ROOT / "experiments" / name)
        mine = {row.name: config_key(row_config(exp, row, 0, [])) for row in exp.rows}
        assert {row: mine[row] for row in pairs} == {row: keys[t1] for row, t1 in pairs.items()}, name
        assert len(set(mine.values()) & set(keys.values())) == len(pairs), f"{name}: another row repeats Table 1"


def test_weak_share_diagnostic_shares_runs_with_fig8():
    fig8 = load_experiment(ROOT / "experiments" / "fig8_weak")
    share = load_experiment(ROOT / "experiments" / "weak_share")
    keys = {row.name: config_key(row_config(fig8, row, 0, [])) for row in fig8.rows}
    mine = {row.name: config_key(row_config(share, row, 0, [])) for row in share.rows}
    assert mine["weak_uniform"] == keys["weak_025"] and mine["only"] == keys["only_025"]
    assert mine["weak_half"] not in keys.values()
    assert row_config(share, share.rows[1], 0, []).data.labeled_per_batch == 16


def test_recorded_runs_keep_their_hashes():
    """A run is found by the hash of its resolved config. A new config field, or a changed default,
    changes every hash and would orphan the recorded campaign: each (row, seed) that a shipped table
    reports as finished must still hash to the run it names."""
    checked = 0
    for path in sorted((ROOT / "experiments" / "results").glob("*.json")):
        exp = load_experiment(ROOT / "experiments" / path.stem)
        rows = {row.name: row for row in exp.rows}
        for row in json.loads(path.read_text())["rows"]:
            for outcome in row["runs"]:
                if outcome["status"] in FINISHED:
                    key = config_key(row_config(exp, rows[row["name"]], outcome["seed"], []))
                    assert key == Path(outcome["run_dir"]).name, f"{path.stem}: {row['name']} seed {outcome['seed']}"
                    checked += 1
    assert checked >= 20  # the tables recorded so far


def test_plan_lists_the_runs_left_with_estimates_from_the_finished_ones(miniature, tiny_data, tmp_path, single_thread,
                                                                        capsys):
    """A campaign is planned from the records: what is left, as campaign.sh items,
    each with the measured time of its row (or of runs of the same model and length)."""
    from crossmodal.experiment.plan import plan_runs

    (first,) = run(miniature, tiny_data, tmp_path, rows=["s1"])
    twin = tmp_path / "twin"  # another experiment repeating s4: its run is listed once
    twin.mkdir()
    (twin / "experiment.yaml").write_text('title: twin\nreference: none\nseeds: [0]\n'
                                          'rows: [{name: s4_again, label: "S4 again", config: ../mini/s4.yaml}]\n')
    overrides = [*tiny_data, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    plan = plan_runs([miniature, twin], overrides, seeds=[0, 1], out_dir=tmp_path / "runs",
                     records_dir=tmp_path / "results" / "runs")
    planned, total = plan.planned, plan.total
    assert plan.finished_cost_s == first.thread_s == first.cost_s > 0.0
    items = [p.item for p in planned]
    assert items == [f"{miniature}:broken:0", f"{miniature}:s4:0", f"{miniature}:s1:1", f"{miniature}:broken:1",
                     f"{miniature}:s4:1"]
    assert total == 6  # 3 rows x 2 seeds: the twin's s4_again is mini's s4, not listed twice
    by_item = {p.item: p for p in planned}
    assert by_item[f"{miniature}:s1:1"].estimate_s == first.wall_s and "1 finished s1 run" in by_item[f"{miniature}:s1:1"].basis
    # broken is s4 with another weight: same model and length as s4, which has not run either
    assert by_item[f"{miniature}:s4:0"].estimate_s is None and "no finished run of poe" in by_item[f"{miniature}:s4:0"].basis
    assert not any(p.resumable for p in planned)

    # The plan is in time of one thread: a run trained with 2 is no estimate for anything.
    record = tmp_path / "results" / "runs" / f"{Path(first.run_dir).name}.json"
    shutil.move(Path(first.run_dir) / "run.json", tmp_path / "run.json")  # leave only the record
    record.write_text(json.dumps({**json.loads(record.read_text()), "torch_threads": 2}))
    (left,) = plan_runs([miniature], overrides, seeds=[1], rows=["s1"], out_dir=tmp_path / "runs",
                        records_dir=tmp_path / "results" / "runs").planned
    assert left.estimate_s is None and "no finished run of crossmodal" in left.basis
    # Nor is a resumed run, whose parts may have had different thread counts.
    record.write_text(json.dumps({**json.loads(record.read_text()), "torch_threads": 1, "resumed": True}))
    (left,) = plan_runs([miniature], overrides, seeds=[1], rows=["s1"], out_dir=tmp_path / "runs",
                        records_dir=tmp_path / "results" / "runs").planned
    assert left.estimate_s is None
    record.write_text(json.dumps({**json.loads(record.read_text()), "resumed": False}))
    shutil.move(tmp_path / "run.json", Path(first.run_dir) / "run.json")

    with pytest.raises(ConfigError) as excinfo:
        plan_runs([miniature], overrides, rows=["s5"], out_dir=tmp_path / "runs")
    raises_one_line(excinfo, "--rows", "s5")

    # Through the CLI: printed, nothing trained or written.
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert main(["experiment", str(miniature), "--plan", "--seeds", "0,1", "--out", str(tmp_path / "runs"),
                 "--results", str(tmp_path / "results"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "1 of 6 distinct runs finished (0m" in out and "of one thread); 5 to train:" in out and f"{miniature}:s1:1" in out
    assert "1 without an estimate" not in out and "4 without an estimate" in out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before

    # A model trained for another length: its epochs times the median epoch of its finished runs.
    lengths = tmp_path / "lengths"
    lengths.mkdir()
    (lengths / "experiment.yaml").write_text(
        'title: lengths\nreference: none\nseeds: [0]\nrows:\n'
        '  - {name: one, label: "1 epoch", config: ../mini/s1.yaml, overrides: [trainer.max_epochs=1]}\n'
        '  - {name: three, label: "3 epochs", config: ../mini/s1.yaml, overrides: [trainer.max_epochs=3]}\n')
    plan = plan_runs([lengths], [o for o in overrides if not o.startswith("trainer.max_epochs")],
                     out_dir=tmp_path / "runs", records_dir=tmp_path / "results" / "runs")
    (three,) = plan.planned  # "one" is s1 itself, finished
    assert three.row == "three" and three.estimate_s == pytest.approx(3 * first.wall_s)
    assert "3 x the median epoch of 1 finished run(s) of crossmodal" in three.basis

    # An interrupted run is estimated for what it has left: here seed 1 of s1, stopped after its
    # last checkpoint (seed 0's, at the end of its one epoch) and before its test. Partial
    # fractions: test_trained_fraction_of_an_interrupted_run.
    stopped = tmp_path / "runs" / by_item[f"{miniature}:s1:1"].key / "checkpoints" / "last.ckpt"
    stopped.parent.mkdir(parents=True)
    shutil.copy(Path(first.run_dir) / "checkpoints" / "last.ckpt", stopped)
    (left,) = plan_runs([miniature], overrides, seeds=[0, 1], rows=["s1"], out_dir=tmp_path / "runs",
                        records_dir=tmp_path / "results" / "runs").planned
    assert left.item == f"{miniature}:s1:1" and left.resumable and left.trained == 1.0
    assert left.estimate_s == 0.0 < first.wall_s and "less the 100% trained" in left.basis
    shutil.rmtree(stopped.parents[1])

    # An interrupted run (its last checkpoint, no run.json) is listed as resuming.
    (Path(first.run_dir) / "run.json").unlink()
    (tmp_path / "results" / "runs" / f"{Path(first.run_dir).name}.json").unlink()
    planned = plan_runs([miniature], overrides, out_dir=tmp_path / "runs", records_dir=tmp_path / "results" / "runs").planned
    assert [(p.row, p.resumable, p.trained) for p in planned] == [("s1", True, 1.0), ("broken", False, None),
                                                                  ("s4", False, None)]


@pytest.mark.parametrize("total, current, last, started, fraction", [
    (3600, 900, True, 4, 3600 / 5400),  # saved at epoch 4's end (its validation runs before it completes)
    (3150, 450, False, 4, 3150 / 5400),  # halfway through epoch 4: an epoch is 2700 / 3 batches
    (450, 450, False, 1, None),  # halfway through the first epoch: its length is not known yet
])
def test_trained_fraction_of_an_interrupted_run(total, current, last, started, fraction):
    from crossmodal.experiment.plan import trained_fraction

    loops = {"epoch_loop.batch_progress": {"total": {"completed": total}, "current": {"completed": current},
                                           "is_last_batch": last},
             "epoch_progress": {"current": {"started": started}}}
    assert trained_fraction(loops, max_epochs=6) == (None if fraction is None else pytest.approx(fraction))


def test_commit_is_dirty_for_code_changes_not_for_rewritten_results(tmp_path):
    """Tables are rewritten one experiment after another: the second must not call the first's
    fresh table a local change, while an edited source file must show."""
    import subprocess

    from crossmodal.experiment.records import OUTPUTS, git_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / OUTPUTS).mkdir(parents=True)
    (tmp_path / "code").mkdir()
    for path in (tmp_path / OUTPUTS / "table1.md", tmp_path / "code" / "model.py"):
        path.write_text("first\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    clean = git_commit(tmp_path / "code")
    assert len(clean) == 10 and not clean.endswith("+dirty")
    (tmp_path / OUTPUTS / "table1.md").write_text("rewritten\n")
    assert git_commit(tmp_path / "code") == clean
    (tmp_path / "code" / "model.py").write_text("edited\n")
    assert git_commit(tmp_path / "code") == clean + "+dirty"


def _scratch_campaign(tmp_path):
    """A scratch repository with scripts/campaign.sh and one experiment folder, committed; returns
    the repository, the queue's default worktree, a git runner and a queue starter. Items fail
    at once when they start (there is no .venv), which is all these tests need."""
    import subprocess

    repo, worktree = tmp_path / "repo", tmp_path / "campaign"
    (repo / "scripts").mkdir(parents=True)
    (repo / "exp").mkdir()
    shutil.copy(ROOT / "scripts" / "campaign.sh", repo / "scripts" / "campaign.sh")
    (repo / "exp" / "experiment.yaml").write_text("title: x\n")

    def git(*args, cwd=repo):
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                              capture_output=True, text=True).stdout.strip()

    def queue(*items):
        return subprocess.Popen(["bash", "scripts/campaign.sh", *items], cwd=repo, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin", "CAMPAIGN_DIR": str(worktree), "CAMPAIGN_POLL_S": "1"})

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    return repo, worktree, git, queue


def test_campaign_queue_checks_its_items_and_trains_the_commit_it_was_started_on(tmp_path):
    """scripts/campaign.sh on a scratch repository: bad items and uncommitted edits are refused at
    once, and a queue told to wait (--after) trains the commit it was started on, not one made
    while it waited."""
    import subprocess
    import time

    repo, worktree, git, queue = _scratch_campaign(tmp_path)
    first = git("rev-parse", "HEAD")
    bad = queue("exp:row")
    assert bad.wait(30) == 2 and "expected <experiment folder>:<row>:<seed>" in bad.stdout.read()
    (repo / "exp" / "experiment.yaml").write_text("title: edited\n")
    dirty = queue("exp:row:0")
    assert dirty.wait(30) == 2 and "commit first" in dirty.stdout.read()
    git("checkout", "-q", "--", ".")

    blocker = subprocess.Popen(["sleep", "30"])
    waiting = queue("--after", str(blocker.pid), "exp:row:0")
    time.sleep(1)
    git("commit", "-q", "--allow-empty", "-m", "second, made while the queue waits")
    blocker.kill()
    blocker.wait()
    waiting.wait(60)
    out = waiting.stdout.read()
    assert f"campaign: {first[:7]}" in out and "=== " in out  # it went on to the item (no .venv here: it fails)
    assert git("rev-parse", "HEAD", cwd=worktree) == first


def test_campaign_queue_leaves_a_busy_worktree_alone_and_trains_from_its_own(tmp_path):
    """A queue started while another one runs in the shared worktree at an older commit must not
    move that worktree (the running process imports modules from it): it trains its own commit
    in a worktree of its own, removed at its end without touching the shared data/ and runs/.
    Once the worktree is free, the next queue moves it, and clears a stopped queue's own worktree."""
    import subprocess

    repo, worktree, git, queue = _scratch_campaign(tmp_path)
    first = git("rev-parse", "HEAD")
    assert queue("exp:row:0").wait(60) == 0 and git("rev-parse", "HEAD", cwd=worktree) == first
    (repo / "runs").mkdir(exist_ok=True)
    (repo / "runs" / "kept").write_text("a finished run\n")
    git("commit", "-q", "--allow-empty", "-m", "second")
    second = git("rev-parse", "HEAD")

    running = subprocess.Popen(["sleep", "60"], cwd=worktree)  # stands for the other queue's run
    try:
        late = queue("exp:row:0")
        assert late.wait(60) == 0
        out = late.stdout.read()
    finally:
        running.kill()
        running.wait()
    own = tmp_path / f"campaign-{second[:7]}"
    assert f"campaign: {second[:7]} in {own}" in out and f"campaign: removed {own}" in out
    assert git("rev-parse", "HEAD", cwd=worktree) == first
    assert not own.exists() and str(own) not in git("worktree", "list")
    assert (repo / "runs" / "kept").read_text() == "a finished run\n"

    # A queue killed before its end leaves its own worktree: the next queue clears it.
    left = tmp_path / f"campaign-{first[:7]}"
    git("worktree", "add", "-q", "--detach", str(left), first)
    free = queue("exp:row:0")
    assert free.wait(60) == 0
    out = free.stdout.read()
    assert f"campaign: {second[:7]} in {worktree}" in out and f"campaign: removed {left}, left by a queue" in out
    assert git("rev-parse", "HEAD", cwd=worktree) == second and not left.exists()


PRETRAIN_MANIFEST = """\
title: "Pre-trained rows"
seeds: [0]
rows:
  - {name: all_labels, config: s1.yaml, pretrain: [steps=2, batch_size=4]}
  - {name: half_labels, config: s1.yaml, pretrain: [steps=2, batch_size=4], overrides: [data.labeled_fraction=0.5, "model.pose_losses=[biomech]"]}
"""


def test_rows_with_pretraining_share_it_and_count_its_time(miniature, tiny_data, tmp_path, single_thread):
    from crossmodal.experiment.plan import plan_runs

    (miniature / "experiment.yaml").write_text(PRETRAIN_MANIFEST)
    overrides = [*tiny_data, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    plan = plan_runs([miniature], overrides, out_dir=tmp_path / "runs", records_dir=tmp_path / "results" / "runs")
    first, second = plan.planned  # one pre-training, counted once, not guessed before one has run
    assert "plus 2 pre-training steps, not estimated" in first.basis and "counted with another row" in second.basis
    outcomes = run(miniature, tiny_data, tmp_path)
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    (folder,) = (tmp_path / "runs").glob("pretrain-*")  # one pre-training for both labelled fractions
    made = json.loads((folder / "pretrain.json").read_text())
    for o in outcomes:
        record = json.loads((Path(o.run_dir) / "run.json").read_text())
        assert record["pretrain_s"] == made["wall_s"] and record["wall_s"] > made["wall_s"]
        config = (Path(o.run_dir) / "config.yaml").read_text()
        assert str(folder / "trunk.pt") in config
        assert 0.0 <= record["metrics"]["limits_broken"] <= 1.0 and "limits_broken_labels" in record["metrics"]
    # a new seed: its rows have an estimate of their own (pre-training included) and a new pre-training
    (left, _) = plan_runs([miniature], overrides, seeds=[0, 1], out_dir=tmp_path / "runs",
                          records_dir=tmp_path / "results" / "runs").planned
    assert left.seed == 1 and left.estimate_s is not None and "finished all_labels run" in left.basis
    assert "pre-training" not in left.basis, left.basis
    half = json.loads((Path(outcomes[1].run_dir) / "run.json").read_text())
    assert half["pose_limits"]["biomech"]["frames"] == 8  # the labelled half of the 16 training frames
    table = (tmp_path / "results" / "mini.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| all_labels |"))
    cell = row.split("|")[-3].strip()  # the outside-bounds cell, before the time: "share (bones / palm / joints)"
    share, excess = cell.split(" (")
    assert 0.0 <= float(share) <= 100.0 and len(excess.rstrip(")").split(" / ")) == 3, cell
    assert all(float(v) >= 0.0 for v in excess.rstrip(")").split(" / ")), cell
    exp = load_experiment(miniature)
    overrides = [*tiny_data, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    key = config_key(row_config(exp, exp.rows[0], 0, overrides))
    assert key == Path(outcomes[0].run_dir).name  # the runs folder is not in the hash
    assert key == config_key(row_config(exp, exp.rows[0], 0, [*overrides, "out_dir=elsewhere"]))


def test_bad_pretrain_settings_are_one_line_errors(miniature):
    (miniature / "experiment.yaml").write_text(PRETRAIN_MANIFEST.replace("steps=2", "stepz=2"))
    with pytest.raises(ConfigError) as excinfo:
        load_experiment(miniature)
    raises_one_line(excinfo, "rows[0].pretrain", "PretrainSettings", "stepz=2")
