"""Atomic writing: the final name holds a complete file or its previous version, never a part."""

from __future__ import annotations

import os
import stat

import pytest

from crossmodal.io import atomic_path, atomic_write_text


def test_written_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "model.onnx", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == 0o644


def test_failure_keeps_the_previous_version_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "results.md"
    atomic_write_text(final, "complete")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert final.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]
