"""The single entry point: help lists the commands; user errors are one line, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crossmodal.cli import COMMANDS, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossmodal", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout
    assert {"synth", "cache", "config"} <= set(COMMANDS)


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "seed=5", "data.batch_size=3"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "batch_size: 3" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["config", "data.nope=1"], "error: command line: unknown config key 'data.nope'"),
        (["config", "data.dataset=coco"], "error: data.dataset: unknown dataset 'coco'; registered datasets:"),
        (["cache", "--dataset", "coco", "--root", "x", "--split", "training", "--out", "x.h5"], "unknown dataset 'coco'"),
    ],
)
def test_user_errors_are_one_line(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_list_shows_every_registry(capsys):
    from crossmodal.registry import DATASETS, DECODERS, ENCODERS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in DATASETS.names() + ENCODERS.names() + DECODERS.names():
        assert name in out
    assert out.splitlines()[0].startswith("datasets")
