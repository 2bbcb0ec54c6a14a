"""Paired statistics and the comparison scripts (positive control, regime map) end to end on tiny runs."""

import csv
import math

import pytest

from experiments.stats import AS_TRAINED, CALIBRATED, paired_difference, paired_rows, stronger_baseline, t_interval
from fed_uml.errors import SettingsError
from fed_uml.results import read_results

TINY = ["dataset.test_samples_per_class=2", "dataset.image_size=16", "model.width=4", "training.epochs=1",
        "training.log_every=0"]


def test_paired_difference_by_hand():
    # differences 0.02, 0.02, 0.01: mean 0.01667, sd 0.005774, t(0.975, 2) = 4.3027
    d = paired_difference({0: 0.80, 1: 0.82, 2: 0.81, 7: 0.5}, {0: 0.78, 1: 0.80, 2: 0.80})
    assert d.n == 3 and d.mean == pytest.approx(0.016667, abs=1e-6)
    half = 4.302653 * 0.0057735 / math.sqrt(3)
    assert (d.low, d.high) == (pytest.approx(d.mean - half, abs=1e-6), pytest.approx(d.mean + half, abs=1e-6))
    assert d.excludes_zero and d.text() == "+1.67 [+0.23, +3.10]"
    one = t_interval([0.1])
    assert one.n == 1 and math.isnan(one.low) and not one.excludes_zero
    assert not paired_difference({0: 0.5, 1: 0.7}, {0: 0.6, 1: 0.6}).excludes_zero


def test_the_baseline_of_record_is_its_stronger_form_per_cell():
    """Calibration wins on the mean over seeds here (0.78 vs 0.75), so the cell's baseline is
    the calibrated model on EVERY seed, even seed 1 where the model as trained scored higher: a
    per-seed maximum (0.80, 0.82, 0.79 = 0.8033) would pick with each seed's test set."""
    as_trained, calibrated = {0: 0.70, 1: 0.82, 2: 0.73}, {0: 0.80, 1: 0.75, 2: 0.79}
    values, form = stronger_baseline(as_trained, calibrated)
    assert form == CALIBRATED and values == calibrated
    assert stronger_baseline(calibrated, as_trained) == (calibrated, AS_TRAINED)  # roles swapped
    assert stronger_baseline({0: 0.5}, {0: 0.5}) == ({0: 0.5}, AS_TRAINED)  # a tie: as trained
    # only the seeds both forms have decide, and are kept
    assert stronger_baseline({0: 0.6, 1: 0.9}, {0: 0.7}) == ({0: 0.7}, CALIBRATED)
    rows = paired_rows({("x",): {0: 0.9, 1: 0.9, 2: 0.9}}, {("x",): values}, ("cell",), {("x",): form})
    assert rows[0]["baseline_variant"] == CALIBRATED and rows[0]["diff"] == pytest.approx(0.9 - 0.78)


def test_sweep_pairs_uml_with_the_stronger_unimodal_form(tmp_path):
    from experiments.sweep import paired

    rows = []
    for seed, (before, after) in enumerate([(0.60, 0.70), (0.62, 0.71)]):
        rows.append({"method": "unimodal", "budget": 4, "local_epochs": 2, "seed": seed, "modality": "sar",
                     "accuracy": before, "accuracy_before_calibration": before, "accuracy_after_calibration": after})
        rows.append({"method": "unimodal", "budget": 4, "local_epochs": 2, "seed": seed, "modality": "rgb",
                     "accuracy": 0.9, "accuracy_before_calibration": 0.9, "accuracy_after_calibration": 0.8})
        rows.append({"method": "uml", "budget": 4, "local_epochs": 2, "seed": seed, "modality": "sar",
                     "accuracy": 0.72, "accuracy_before_calibration": 0.5, "accuracy_after_calibration": 0.72})
        rows.append({"method": "uml", "budget": 4, "local_epochs": 2, "seed": seed, "modality": "rgb",
                     "accuracy": 0.91, "accuracy_before_calibration": 0.5, "accuracy_after_calibration": 0.91})
    out = {r["modality"]: r for r in paired(rows, tmp_path / "sweep_paired.csv")}
    assert out["sar"]["baseline_variant"] == CALIBRATED and out["sar"]["diff"] == pytest.approx(0.72 - 0.705)
    assert out["rgb"]["baseline_variant"] == AS_TRAINED and out["rgb"]["diff"] == pytest.approx(0.01)
    assert _rows(tmp_path / "sweep_paired.csv")[1]["baseline_variant"] == CALIBRATED
    # UML under another weighting pairs with the same unimodal runs (the baseline averages
    # within each modality, where every weighting gives the same weights)
    rows += [{**r, "weighting": "modality", "accuracy": r["accuracy"] - 0.02} for r in rows if r["method"] == "uml"]
    out = {(r["weighting"], r["modality"]): r for r in paired(rows, tmp_path / "sweep_paired.csv")}
    assert out[("modality", "sar")]["diff"] == pytest.approx(0.72 - 0.02 - 0.705)
    assert out[("examples", "sar")]["diff"] == pytest.approx(0.72 - 0.705) and len(out) == 4


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_positive_control_writes_paired_rows(tmp_path, capsys):
    from experiments.positive_control import main

    assert main(["--seeds", "0,1", "--per-class", "2", "--out", str(tmp_path), *TINY]) == 0
    rows = _rows(tmp_path / "positive_control.csv")
    assert {(r["setting"], r["arm"], r["modality"]) for r in rows} == {
        ("centralized", a, k) for a in ("uml", "uml_independent", "unimodal", "pooled") for k in ("rgb", "rgb2")}
    for r in rows:
        assert r["n_seeds"] == "2"
        assert float(r["ci_low"]) <= float(r["diff_vs_unimodal"]) <= float(r["ci_high"])
    runs = _rows(tmp_path / "positive_control_runs.csv")
    assert len(runs) == 4 * 2 * 2 and {r["engine"] for r in runs} == {""}  # centralized: no engine
    # the paired difference is the mean of the per-seed differences to the stronger form of the baseline
    acc = {(r["arm"], r["seed"], r["modality"]): r for r in runs}
    for half in ("rgb", "rgb2"):
        forms = {f: {s: float(acc[("unimodal", s, half)][f"accuracy_{f}_calibration"]) for s in ("0", "1")}
                 for f in ("before", "after")}
        stronger = "after" if sum(forms["after"].values()) > sum(forms["before"].values()) else "before"
        for arm in ("uml", "unimodal"):
            row = next(r for r in rows if r["arm"] == arm and r["modality"] == half)
            assert row["baseline_variant"] == ("calibrated" if stronger == "after" else "as trained")
            expected = sum(float(acc[(arm, s, half)]["accuracy"]) - forms[stronger][s] for s in ("0", "1")) / 2
            assert float(row["diff_vs_unimodal"]) == pytest.approx(expected)
    assert "| centralized | uml | rgb |" in capsys.readouterr().out
    # a rerun skips finished runs and gives the same table
    assert main(["--seeds", "0,1", "--per-class", "2", "--out", str(tmp_path), *TINY]) == 0
    assert _rows(tmp_path / "positive_control.csv") == rows


@pytest.mark.slow
def test_federated_positive_control_on_the_engine(tmp_path, capsys):
    """`--federated` on the in-process engine (what `flwr run` would run, in this process):
    UML and the unimodal baseline on 2 institutions per half, pooled as 4 institutions of one
    modality per half; every row says which engine ran it."""
    from experiments.positive_control import main

    fed = ["federated.num_rounds=2", "federated.evaluate_every=0", "simulation.engine=inprocess"]
    assert main(["--federated", "--seeds", "0", "--per-class", "4", "--out", str(tmp_path), *TINY, *fed]) == 0
    runs = _rows(tmp_path / "positive_control_runs.csv")
    assert {(r["setting"], r["arm"], r["modality"]) for r in runs} == {
        ("federated", a, k) for a in ("uml", "unimodal", "pooled") for k in ("rgb", "rgb2")}
    assert {r["engine"] for r in runs} == {"inprocess"}
    results = {d.name: read_results(d / "seed0" / "results.json") for d in (tmp_path / "runs" / "federated").iterdir()}
    assert sorted(results) == ["pooled-rgb", "pooled-rgb2", "uml", "unimodal"]
    for name in ("uml", "unimodal"):
        assert {k: m["institutions"] for k, m in results[name]["modalities"].items()} == {"rgb": 2, "rgb2": 2}
        assert {m["n_train"] for m in results[name]["modalities"].values()} == {40}
    for half in ("rgb", "rgb2"):  # pooled: one modality, 4 institutions of the same size, UML's calibration
        pooled = results[f"pooled-{half}"]
        assert pooled["method"] == "uml" and list(pooled["modalities"]) == [half]
        assert pooled["modalities"][half]["institutions"] == 4 and pooled["modalities"][half]["n_train"] == 80
    rows = {(r["arm"], r["modality"]): r for r in _rows(tmp_path / "positive_control.csv")}
    base = results["unimodal"]["modalities"]["rgb"]
    stronger = max(base["accuracy_before_calibration"], base["accuracy_after_calibration"])
    assert float(rows[("uml", "rgb")]["diff_vs_unimodal"]) == pytest.approx(
        results["uml"]["modalities"]["rgb"]["accuracy"] - stronger)
    assert float(rows[("uml", "rgb")]["diff_vs_pooled"]) == pytest.approx(
        results["uml"]["modalities"]["rgb"]["accuracy"] - results["pooled-rgb"]["modalities"]["rgb"]["accuracy"])
    assert "| federated | uml | rgb |" in capsys.readouterr().out
    # a setting that cannot work stops the control before any run (here: a bad engine)
    with pytest.raises(SettingsError, match="simulation.engine"):
        main(["--federated", "--seeds", "1", "--out", str(tmp_path), *TINY, "simulation.engine=ray"])
    assert not (tmp_path / "runs" / "federated" / "uml" / "seed1").exists()


@pytest.mark.slow
def test_regime_map_writes_csv_and_heat_map(tmp_path):
    from experiments.regime_map import main

    assert main(["--pairs", "sar-rgb", "--weak", "2", "--strong", "equal,3", "--seeds", "0,1",
                 "--out", str(tmp_path), *TINY]) == 0
    rows = _rows(tmp_path / "regime_map.csv")
    assert {(r["strong"], r["modality"], r["role"]) for r in rows} == {
        (s, k, role) for s in ("equal", "3") for k, role in (("sar", "weak"), ("rgb", "strong"))}
    runs = _rows(tmp_path / "regime_map_runs.csv")
    n_train = {(r["strong"], r["method"], r["modality"]) for r in runs}
    assert len(n_train) == 8 and len(runs) == 16
    # every gain is against the stronger form of the baseline in its cell
    for r in rows:
        forms = {f: {x["seed"]: float(x[f"accuracy_{f}_calibration"]) for x in runs if x["method"] == "unimodal"
                     and (x["strong"], x["modality"]) == (r["strong"], r["modality"])} for f in ("before", "after")}
        means = {f: sum(v.values()) / len(v) for f, v in forms.items()}
        variant = "calibrated" if means["after"] > means["before"] else "as trained"
        assert r["baseline_variant"] == variant
        base = forms["after" if variant == "calibrated" else "before"]
        assert float(r["unimodal_mean"]) == pytest.approx(sum(base.values()) / len(base))
    assert (tmp_path / "regime_map.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main(["--pairs", "sar-lidar", "--out", str(tmp_path)])


@pytest.mark.slow
def test_sweep_on_the_engine_writes_rows_and_pairs(tmp_path):
    """`experiments.sweep` with `simulation.engine=inprocess`: every job runs the apps in the
    sweep's process, its row says so, and the paired table names the baseline form it used."""
    import subprocess
    import sys

    from tests.conftest import REPO

    cmd = [sys.executable, "-m", "experiments.sweep", "-m", "federated.local_epochs=1,2", "method=uml,unimodal",
           "sweep.budget=2", "simulation.engine=inprocess", "simulation.num_supernodes=2", "federated.evaluate_every=0",
           f"hydra.sweep.dir={tmp_path}", "dataset.samples_per_class=2", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "sweep.csv")
    assert sorted({(r["method"], r["local_epochs"], r["rounds"]) for r in rows}) == [
        ("uml", "1", "2"), ("uml", "2", "1"), ("unimodal", "1", "2"), ("unimodal", "2", "1")]
    assert {r["engine"] for r in rows} == {"inprocess"} and len(rows) == 8
    paired = _rows(tmp_path / "sweep_paired.csv")
    assert len(paired) == 4 and {r["baseline_variant"] for r in paired} <= {AS_TRAINED, CALIBRATED}
    assert (tmp_path / "sweep.png").exists() and (tmp_path / "sweep_paired.png").exists()


def test_data_size_pairs_uml_with_the_stronger_unimodal_form(tmp_path):
    from experiments.data_size import FIELDS, paired

    path = tmp_path / "data_size.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for seed, (uni, cal) in enumerate([(0.50, 0.60), (0.54, 0.58)]):
            w.writerow({"dataset": "synthetic", "samples_per_class": 5, "seed": seed, "modality": "sar", "n_train": 50,
                        "uml_calibrated": 0.62, "uml_uncalibrated": 0.4, "unimodal": uni, "unimodal_calibrated": cal})
    (row,) = paired(path)
    assert row["baseline_variant"] == CALIBRATED and row["diff"] == pytest.approx(0.62 - 0.59)
    assert _rows(tmp_path / "data_size_paired.csv")[0]["baseline_variant"] == CALIBRATED
