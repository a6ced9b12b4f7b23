"""benchmarks/gpu_check.py --smoke: every stage of the GPU check at tiny sizes on CPU, with the Triton
kernels under the interpreter, so that the script a GPU machine runs once, unattended, cannot rot
while no GPU is around.

Like the interpreted kernel tests (run_interpreted in conftest.py), it runs in a fresh process: the
script switches TRITON_INTERPRET on before triton is imported. The short real run builds its own tiny
cache (20 synthetic frames) under tmp_path.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("open3d")  # the smoke run generates its tiny frames

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
SECTIONS = ["Targets", "Kernels: Triton against the CPU reference", "Kernels: forward + backward timings",
            "Training throughput", "GPU memory and the largest batch", "Short real run"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out / "report"), "--work", str(out / "work"),
         "--commit", "test"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = out / "report" / "gpu_check_cpu_smoke.md"
    return report.read_text(), json.loads(report.with_suffix(".json").read_text())


@pytest.mark.slow
def test_smoke_report_has_every_section_and_no_failure(smoke):
    text, data = smoke
    for section in SECTIONS:
        assert f"## {section}" in text
    assert not data["errors"]
    assert "not run (time budget)" not in text and "skipped" not in text
    assert "commit: test" in text and "triton" in text and "(interpreter)" in text


@pytest.mark.slow
def test_smoke_kernels_agree_with_the_cpu_reference_and_are_timed(smoke):
    results = smoke[1]["results"]
    assert results["check"]["ok"], results["check"]["rows"]
    assert len(results["check"]["rows"]) == 8
    rows = results["kernels"]["rows"]
    assert [r["n"] for r in rows] == smoke[1]["plan"]["kernel_sizes"]
    for r in rows:
        assert r["chamfer_triton_ms"] > 0 and r["chamfer_dense_ms"] > 0 and r["emd_triton_ms"] > 0
        assert abs(r["emd_gap"]) < 0.01


@pytest.mark.slow
def test_smoke_times_every_strategy_in_both_precisions_and_searches_the_batch(smoke):
    results = smoke[1]["results"]
    rows = results["throughput"]["rows"]
    timed = {(r["strategy"], r["precision"]) for r in rows if r["samples_per_s"] > 0}
    for strategy in ("crossmodal", "extended", "kl_align", "poe", "regressor", "resnet18"):
        for precision in ("bf16-mixed", "32-true"):
            assert (strategy, precision) in timed
    assert all(0 < r["of_ceiling"] for r in rows)
    fits = [(r["precision"], r["batch"]) for r in results["batch"]["rows"] if r["fits"]]
    assert ("bf16-mixed", 16) in fits and ("32-true", 16) in fits  # doubled from 4 up to the smoke cap


@pytest.mark.slow
def test_smoke_short_run_trains_through_lightning_and_validates(smoke):
    run = smoke[1]["results"]["run"]
    assert run["error"] is None and run["finite"]
    assert run["steps"] == run["planned_steps"] and not run["stopped_by_budget"]
    assert run["precision"] == "bf16-mixed"
    assert run["val_epe"] and all(math.isfinite(v) for v in run["val_epe"])
