"""The main job's progress line, summary table and curves.png (server/report.py)."""

from __future__ import annotations

from PIL import Image

from server.report import plot_curves, progress, summary_table

MODALITIES = {
    "sar": {"accuracy": 0.63, "accuracy_before_calibration": 0.61, "accuracy_after_calibration": 0.63,
            "n_train": 200, "n_test": 1000, "institutions": 2},
    "rgb": {"accuracy": 0.74, "accuracy_before_calibration": 0.72, "accuracy_after_calibration": 0.74,
            "n_train": 180, "n_test": 900, "institutions": 2},
}


def test_progress_extrapolates_the_mean_round():
    assert progress(3, 30, 30.0, 3) == "round 3/30, 0:30 elapsed, ~4:30 left"
    assert progress(30, 30, 61.0, 30) == "round 30/30, 1:01 elapsed, last round"
    # a run resumed after round 10 has done 2 rounds of its own in 20 s
    assert progress(12, 30, 20.0, 2) == "round 12/30, 0:20 elapsed, ~3:00 left"
    assert progress(1, 200, 4000.0, 1).endswith("~221:06:40 left")  # hours shown past 60 minutes


def test_summary_table_has_one_aligned_row_per_modality():
    text = summary_table(MODALITIES, calibrated=True)
    lines = text.splitlines()
    assert lines[0].split() == ["modality", "accuracy", "before", "cal.", "after", "cal.", "institutions", "train",
                                "test"]
    assert lines[2].split() == ["sar", "0.6300", "0.6100", "0.6300", "2", "200", "1000"]
    assert lines[3].split() == ["rgb", "0.7400", "0.7200", "0.7400", "2", "180", "900"]
    assert len({len(line) for line in lines[:4]}) == 1  # aligned columns
    assert "after BN calibration" in lines[-1]
    assert "before BN calibration" in summary_table(MODALITIES, calibrated=False)


def test_curves_png_shows_every_evaluated_round(tmp_path):
    history = [{"round": r, "sar/test_accuracy": 0.3 + 0.01 * r, "rgb/test_accuracy": 0.4 + 0.01 * r}
               for r in range(1, 31)]
    path = plot_curves(history, MODALITIES, 30, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    assert plot_curves([{"round": 1}], MODALITIES, 1, tmp_path / "none.png") is None
