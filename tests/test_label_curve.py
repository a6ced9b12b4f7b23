"""The label-share figure (crossmodal/experiment/label_curve.py) from recorded tables."""

from __future__ import annotations

import json
from pathlib import Path

from crossmodal.experiment import label_curve


def _table(path: Path, rows: list[tuple[str, float, float, int]]) -> None:
    path.write_text(json.dumps({"rows": [
        {"name": name, "overrides": [] if fraction == 1.0 else [f"data.labeled_fraction={fraction}"],
         "summary": {"n": n, "epe_mean": epe, "epe_mean_std": 0.5 if n > 1 else None} if n else {"n": 0}}
        for name, fraction, epe, n in rows]}))


def test_series_points_and_files(tmp_path) -> None:
    _table(tmp_path / "fig8_weak.json", [("weak_010", 0.1, 29.5, 3), ("only_010", 0.1, 25.3, 3),
                                         ("only_025", 0.25, 20.1, 3), ("full_100", 1.0, 17.2, 3)])
    _table(tmp_path / "fewer_labels.json", [("only_005", 0.05, 30.0, 1), ("only_010", 0.1, 25.3, 3), ("kp2d_010", 0.1, 21.0, 3),
                                            ("kp2d_005", 0.05, 0.0, 0)])
    series, full = label_curve.collect(tmp_path)
    # Both experiments' labelled-only rows make one line; a fraction both hold counts once.
    assert series["labelled only"] == [(0.05, 30.0, None, 1), (0.1, 25.3, 0.5, 3), (0.25, 20.1, 0.5, 3)]
    assert series["+ clouds + constraints + 2D keypoints"] == [(0.1, 21.0, 0.5, 3)]  # the unfinished 5% row is left out
    assert full["epe_mean"] == 17.2
    assert label_curve.main(["--results", str(tmp_path), "--out", "curve"]) == 0
    text = (tmp_path / "curve.md").read_text()
    assert "| + clouds, uniform batches (Fig. 8) | 10% | 29.50 ± 0.50 | 3 |" in text
    assert "| full supervision | 100% | 17.20 ± 0.50 | 3 |" in text
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_no_table_is_a_one_line_message(tmp_path, capsys) -> None:
    assert label_curve.main(["--results", str(tmp_path)]) == 1
    assert capsys.readouterr().out.count("\n") == 1
