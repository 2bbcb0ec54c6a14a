"""experiments.tabulation (Tables 1 and 2 from hand-made results.json files) and experiments.tables
(its command line and the grid runner on experiments.grid)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

import pytest

from experiments import tables, tabulation
from fed_uml.errors import SettingsError
from fed_uml.results import make_results, read_results, write_json_atomic


def _write(root: Path, method: str, dataset: str, seed: int, accs: dict[str, float], federated: bool = False,
           after: dict[str, float] | None = None, created: str | None = None, sub: str = "", config=None) -> Path:
    mods = {
        k: {"accuracy": v, "accuracy_before_calibration": v,
            "accuracy_after_calibration": (after or accs)[k], "n_train": 10, "n_test": 10}
        for k, v in accs.items()
    }
    config = config or {"seed": seed, "training": {"epochs": 30}}
    res = make_results(method, dataset, seed, federated, mods, config, 1.0)
    if created is not None:
        res["created"] = created
    return write_json_atomic(root / dataset / method / sub / f"seed{seed}" / "results.json", res)


def _pm(values, digits=2):
    m = 100 * statistics.fmean(values)
    s = 100 * statistics.stdev(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    _write(root, "unimodal", "eurosat", 0, {"sar": 0.70, "rgb": 0.90})
    _write(root, "unimodal", "eurosat", 1, {"sar": 0.80, "rgb": 0.92})
    _write(root, "uml", "eurosat", 0, {"sar": 0.75, "rgb": 0.95}, after={"sar": 0.85, "rgb": 0.97})
    _write(root, "uml", "eurosat", 1, {"sar": 0.77, "rgb": 0.93}, after={"sar": 0.81, "rgb": 0.99})
    _write(root, "dann", "eurosat", 0, {"sar": 0.60, "rgb": 0.80})
    _write(root, "dann", "eurosat", 1, {"sar": 0.64, "rgb": 0.84})
    _write(root, "unimodal", "sen12ms", 0, {"s1": 0.50, "s2": 0.70})
    _write(root, "unimodal", "sen12ms", 1, {"s1": 0.52, "s2": 0.74})
    return root


def test_table_layout_and_values(grid: Path):
    md = tabulation.make_tables(grid)
    assert "### Table 1: accuracy (%), unpaired multimodal methods" in md
    assert "### Table 2: accuracy (%), domain adaptation with heterogeneous encoders" in md
    assert "| Method | eurosat sar | eurosat rgb | eurosat Mean | sen12ms s1 | sen12ms s2 | sen12ms Mean |" in md
    unimodal = next(line for line in md.splitlines() if line.startswith("| Unimodal baseline"))
    cells = [c.strip() for c in unimodal.strip("|").split("|")]
    assert cells == [
        "Unimodal baseline",
        _pm([0.70, 0.80]), _pm([0.90, 0.92]), _pm([0.80, 0.86]),
        _pm([0.50, 0.52]), _pm([0.70, 0.74]), _pm([0.60, 0.63]),
    ]
    assert cells[1] == "75.00 ± 7.07"
    # row order of Table 1 follows the paper (unimodal, ISCA, UML); a missing data set is "-"
    lines = md.splitlines()
    assert lines.index(unimodal) < lines.index(next(x for x in lines if x.startswith("| UML (proposed)")))
    uml = next(x for x in lines if x.startswith("| UML (proposed)"))
    assert uml.rstrip().endswith("| - | - | - |")
    # Table 2 has only the data set its methods ran on
    t2 = md.split("### Table 2")[1]
    assert "sen12ms" not in t2.split("\n\n")[1] and "| DANN | " + _pm([0.60, 0.64]) in t2
    assert "2 per cell: seeds 0, 1" in md


def test_metric_choice_and_csv(grid: Path, tmp_path: Path):
    out = tmp_path / "tables"
    md = tabulation.make_tables(grid, out, metric="accuracy_after_calibration")
    assert "| UML (proposed) | " + _pm([0.85, 0.81]) + " | " + _pm([0.97, 0.99]) in md
    assert {p.name for p in out.iterdir()} == {"tables.md", "table1.md", "table1.csv", "table2.md", "table2.csv",
                                               "table1_paired.csv", "table2_paired.csv", "runs.csv"}
    rows = list(csv.DictReader(io.StringIO((out / "table1.csv").read_text())))
    uml = next(r for r in rows if r["method"] == "UML (proposed)")
    assert float(uml["eurosat sar mean"]) == pytest.approx(83.0)
    assert float(uml["eurosat sar std"]) == pytest.approx(100 * statistics.stdev([0.85, 0.81]), abs=1e-4)
    assert float(uml["eurosat Mean mean"]) == pytest.approx(100 * statistics.fmean([0.91, 0.90]))
    assert uml["eurosat n"] == "2" and uml["sen12ms n"] == "0" and uml["sen12ms s1 mean"] == ""
    runs = list(csv.DictReader(io.StringIO((out / "runs.csv").read_text())))
    assert len(runs) == 16 and {r["modality"] for r in runs} == {"sar", "rgb", "s1", "s2"}


def test_single_seed_duplicates_federated_and_other_methods(tmp_path: Path):
    root = tmp_path / "r"
    _write(root, "uml", "synthetic", 0, {"sar": 0.5, "rgb": 0.6}, created="2026-01-01T00:00:00Z", sub="old")
    _write(root, "uml", "synthetic", 0, {"sar": 0.7, "rgb": 0.8}, created="2026-02-01T00:00:00Z", sub="new")
    _write(root, "uml", "synthetic", 0, {"sar": 0.9, "rgb": 0.9}, federated=True)
    _write(root, "fancy", "synthetic", 0, {"sar": 0.1, "rgb": 0.2})
    md = tabulation.make_tables(root)
    assert "| UML (proposed) | 70.00 | 80.00 | 75.00 |" in md  # the newer duplicate, no ± for one seed
    assert "| UML (proposed) (federated) | 90.00 | 90.00 | 90.00 |" in md
    assert "### Other methods" in md and "| fancy | 10.00 | 20.00 | 15.00 |" in md
    assert "Table 2" not in md


def test_same_dataset_with_different_modalities_gets_separate_columns(tmp_path: Path):
    root = tmp_path / "r"
    _write(root, "uml", "synthetic", 0, {"sar": 0.5, "rgb": 0.6})
    _write(root, "uml", "synthetic", 0, {"sar": 0.5, "ms": 0.7}, sub="ms")
    md = tabulation.make_tables(root)
    assert "synthetic [sar+rgb] sar" in md and "synthetic [sar+ms] ms" in md


def test_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        tabulation.make_tables(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        tabulation.make_tables(tmp_path / "empty")
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a fed-uml results file"):
        tabulation.make_tables(tmp_path / "bad")
    with pytest.raises(ValueError, match="metric"):
        tabulation.collect_runs(tmp_path, metric="f1")


def test_cli_prints_and_writes(grid: Path, tmp_path: Path, capsys):
    assert tables.main([str(grid), "--out", str(tmp_path / "t"), "--digits", "1"]) == 0
    out = capsys.readouterr().out
    assert "75.0 ± 7.1" in out and (tmp_path / "t" / "table2.csv").exists()


TINY = [
    "dataset.samples_per_class=3", "dataset.test_samples_per_class=2", "dataset.image_size=16",
    "model.width=4", "training.epochs=1", "training.batch_size=8", "training.log_every=0", "num_threads=1",
]


def test_grid_runs_methods_and_seeds_then_tables(tmp_path: Path, capsys):
    root = tmp_path / "grid, run=1"  # the results directory never passes through Hydra's override parser
    code = tables.main(["run", "--methods", "unimodal,dann", "--seeds", "0,1", "--root", str(root), *TINY])
    assert code == 0
    for method in ("unimodal", "dann"):
        for seed in (0, 1):
            res = read_results(root / "synthetic" / method / f"seed{seed}" / "results.json")
            assert res["method"] == method and res["seed"] == seed
            assert res["config"]["training"]["epochs"] == 1
            assert (root / "synthetic" / method / f"seed{seed}" / "run.log").stat().st_size > 0
    out = capsys.readouterr().out
    assert "| Unimodal baseline |" in out and "| DANN |" in out
    assert (root / "tables" / "table1.md").exists()
    # existing runs are skipped, not rerun
    before = (root / "synthetic" / "dann" / "seed0" / "results.json").stat().st_mtime_ns
    assert tables.main(["run", "--methods", "dann", "--seeds", "0", "--root", str(root), *TINY]) == 0
    assert (root / "synthetic" / "dann" / "seed0" / "results.json").stat().st_mtime_ns == before


def test_grid_rejects_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown method"):
        tables.run_grid(["nope"], [0], [], tmp_path)
    with pytest.raises(ValueError, match="sets method, seed and results_dir itself"):
        tables.run_grid(["uml"], [0], ["seed=3"], tmp_path)
    assert math.isnan(tabulation.Cell().mean)


def test_grid_refuses_a_bad_setting_before_the_first_run(tmp_path: Path):
    """Every job's settings are checked before any job starts: nothing runs, the job is named."""
    with pytest.raises(SettingsError, match=r"job .*synthetic/uml/seed0 .*training\.lr must be a finite number"):
        tables.run_grid(["uml", "unimodal"], [0], [*TINY, "training.lr=-1"], tmp_path)
    assert not list(tmp_path.rglob("*.log"))


def test_grid_reports_a_failed_run_and_goes_on(tmp_path: Path):
    """A run that raises is returned as (method, seed, error); the other runs still happen."""
    failures = tables.run_grid(["uml", "isca"], [0], [*TINY, "dataset.modalities=[sar]"], tmp_path)
    assert [(m, s) for m, s, _ in failures] == [("isca", 0)]
    assert all("needs at least 2" in e for _, _, e in failures)
    assert (tmp_path / "synthetic" / "uml" / "seed0" / "results.json").exists()


def test_the_baseline_row_is_its_stronger_form_per_column(tmp_path: Path):
    """Federated SAR: calibration lifts the unimodal baseline (60/62 -> 70/72), so its row of
    record, and every paired difference, uses the calibrated model there and the model as
    trained where that is stronger (RGB); both forms are listed as rows."""
    root = tmp_path / "r"
    for seed, (sar, rgb) in enumerate([(0.60, 0.90), (0.62, 0.92)]):
        _write(root, "unimodal", "eurosat", seed, {"sar": sar, "rgb": rgb},
               after={"sar": sar + 0.10, "rgb": rgb - 0.02}, federated=True)
        _write(root, "uml", "eurosat", seed, {"sar": 0.75, "rgb": 0.95}, federated=True)
    md = tabulation.make_tables(root, tmp_path / "t")
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
             for line in md.splitlines() if line.startswith("| ")}
    assert lines["Unimodal baseline (federated)"][:2] == ["71.00ᶜ ± 1.41", "91.00 ± 1.41"]
    assert lines["Unimodal, as trained (federated)"][:2] == ["61.00 ± 1.41", "91.00 ± 1.41"]
    assert lines["Unimodal, after Algorithm 1 (federated)"][:2] == ["71.00 ± 1.41", "89.00 ± 1.41"]
    # UML against the stronger form: SAR 75 - 70, 75 - 72; RGB 95 - 90, 95 - 92
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t" / "table1_paired.csv").read_text())))
    assert [r["method"] for r in rows] == ["UML (proposed) (federated)"]
    assert float(rows[0]["eurosat sar diff"]) == pytest.approx(4.0)
    assert float(rows[0]["eurosat rgb diff"]) == pytest.approx(4.0)
    assert "ᶜ: after Algorithm 1" in md
    # a metric that names its form is tabulated as asked, with no baseline forms
    md = tabulation.make_tables(root, metric="accuracy_before_calibration")
    assert "Unimodal, as trained" not in md and "ᶜ" not in md


def test_paired_differences_to_the_baseline(grid: Path, tmp_path: Path):
    """Per seed, method - unimodal on the same data set; mean and 95% t interval over seeds."""
    md = tabulation.make_tables(grid, tmp_path / "t")
    # UML on eurosat sar: seed 0 0.75 - 0.70, seed 1 0.77 - 0.80: mean +1.0, t(0.975, 1) = 12.706
    half = 12.7062 * statistics.stdev([0.05, -0.03]) / math.sqrt(2) * 100
    assert f"| UML (proposed) | +1.00 [{1 - half:+.2f}, {1 + half:+.2f}] |" in md
    # Table 2 has no baseline row of its own, but its methods are still compared with it
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t" / "table2_paired.csv").read_text())))
    dann = next(r for r in rows if r["method"] == "DANN")
    assert float(dann["eurosat sar diff"]) == pytest.approx(100 * ((0.60 - 0.70) + (0.64 - 0.80)) / 2)
    assert dann["eurosat sar n"] == "2" and dann["baseline"] == "Unimodal baseline"
    assert "Paired difference, method − Unimodal baseline" in md
