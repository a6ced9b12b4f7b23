"""The latency report says how busy the machine was: other processes' CPU beside the timing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from latency import cpu_seconds, other_load  # noqa: E402

SPIN = "import time\nend = time.perf_counter() + 3\nwhile time.perf_counter() < end: pass\n"


@pytest.mark.skipif(cpu_seconds() is None, reason="no /proc/stat here")
def test_a_busy_process_beside_the_timing_is_counted_as_other_load():
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)  # the interpreter is up and spinning
        began, start = time.perf_counter(), cpu_seconds()
        time.sleep(1.0)  # this process idles: the busy core is the spinner's
        load = other_load(start, began)
    finally:
        spinner.kill()
        spinner.wait()
    # One spinning core, less what a crowded test machine takes from it; 0 if it were counted as ours.
    assert load is not None and load > 0.3


@pytest.mark.skipif(cpu_seconds() is None, reason="no /proc/stat here")
def test_this_process_own_work_is_counted_as_ours():
    began, start = time.perf_counter(), cpu_seconds()
    total = 0
    while time.perf_counter() - began < 1.0:
        total += 1
    end = cpu_seconds()
    # Most of a second of our own CPU, whatever runs beside it: subtracted, not reported as other load.
    assert end[1] - start[1] > 0.3
    assert end[0] - start[0] >= end[1] - start[1] - 0.05  # the machine's busy time holds ours
