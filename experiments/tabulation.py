"""Tables 1 and 2 of the study from a directory tree of results.json files.

Reading the runs, mean +/- std cells, paired differences to the unimodal baseline, Markdown and CSV.

Layout (as in notes/paper-results.md): one row per method; per data set one column per
modality and the mean over modalities; each cell is the accuracy in % as mean +/- sample
standard deviation over seeds (the mean alone when there is one seed); under each table, the
paired difference of every method to the unimodal baseline, per seed on the same test sets,
as mean [95% t interval] in points (CSV: table<N>_paired.csv). Table 1 holds the
unpaired multimodal methods (unimodal baseline, ISCA, UML), Table 2 the domain-adaptation
methods with heterogeneous encoders (DANN, CDAN, MCC, MDD); any other method goes to a third
table. Federated runs appear as "<method> (federated)" rows. The unimodal baseline's row is
the baseline of record: in each column (data set, modality), the stronger of the baseline as
trained and after Algorithm 1 (`experiments.stats.stronger_baseline`; a `ᶜ` marks the cells
where calibration won), and the two forms follow it as rows of their own; every paired
difference is against that row. Which metric is tabulated: by
default each run's headline metric (`primary_metric` in results.json: `accuracy` of the
deployed model for single-label runs, macro mAP `map_macro` for multi-label BigEarthNet), or
any metric of `METRICS` (`accuracy`, `map_macro`, `map_micro`, `f1_macro`, each also
`_before_calibration` / `_after_calibration`); the titles name it.

The command line (and the grid that fills the tree) is `experiments/tables.py`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from experiments.stats import AS_TRAINED, CALIBRATED, Paired, paired_difference, stronger_baseline
from fed_uml.results import CALIBRATION_SUFFIXES, TASK_METRICS, read_results

log = logging.getLogger(__name__)


TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Table 1: {metric} (%), unpaired multimodal methods", ("unimodal", "isca", "uml")),
    ("Table 2: {metric} (%), domain adaptation with heterogeneous encoders", ("dann", "cdan", "mcc", "mdd")),
)
OTHER_TABLE = "Other methods: {metric} (%)"
METHOD_LABELS = {
    "unimodal": "Unimodal baseline",
    "isca": "ISCA",
    "uml": "UML (proposed)",
    "dann": "DANN",
    "cdan": "CDAN",
    "mcc": "MCC",
    "mdd": "MDD",
}
# Every other method is compared with this row, seed by seed.
BASELINE = "unimodal"
# The baseline's two forms, listed under its row of record (the stronger of them per cell).
VARIANT_LABELS = {AS_TRAINED: "Unimodal, as trained", CALIBRATED: "Unimodal, after Algorithm 1"}
CALIBRATED_MARK = "ᶜ"
METRICS = tuple(f"{m}{s}" for task in TASK_METRICS.values() for m in task for s in ("", *CALIBRATION_SUFFIXES))
METRIC_LABELS = {"accuracy": "accuracy", "map_macro": "macro mAP", "map_micro": "micro mAP", "f1_macro": "macro F1"}


def metric_label(metric: str) -> str:
    """`macro mAP`, `accuracy before calibration`, ...: how a title names a metric."""
    for suffix in CALIBRATION_SUFFIXES:
        if metric.endswith(suffix):
            return f"{METRIC_LABELS[metric[: -len(suffix)]]} {suffix[1:].replace('_', ' ')}"
    return METRIC_LABELS.get(metric, metric)
# Config entries that may differ between the seeds of one cell without making them different experiments.
_IGNORED_CONFIG = {"seed", "results_dir", "num_threads", "device"}


# ----------------------------------------------------------------------------- collecting runs


@dataclass
class Run:
    """One finished run, read from its results.json."""

    path: Path
    method: str
    dataset: str
    modalities: tuple[str, ...]
    seed: int
    federated: bool
    accuracy: dict[str, float]  # modality -> the chosen metric (accuracy, mAP, ...)
    created: str = ""
    signature: str = ""
    metric: str = "accuracy"  # which metric `accuracy` holds
    # the metric as trained and after Algorithm 1 (a headline metric only), per modality
    forms: dict[str, dict[str, float]] = field(default_factory=dict)
    variant: str = ""  # one of the baseline's forms (AS_TRAINED, CALIBRATED) listed as a row of its own

    @property
    def row(self) -> str:
        """The run's row key: the method (and variant), marked when federated."""
        name = f"{self.method}, {self.variant}" if self.variant else self.method
        return f"{name} (federated)" if self.federated else name

    @property
    def mean(self) -> float:
        """Mean accuracy over the run's modalities."""
        return sum(self.accuracy.values()) / len(self.accuracy)


def _signature(config: dict) -> str:
    """The run's config without the entries that legitimately differ between seeds."""

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in sorted(node.items()) if k not in _IGNORED_CONFIG}
        return node

    return json.dumps(strip(dict(config or {})), sort_keys=True, default=str)


def collect_runs(root: str | Path, metric: str | None = None) -> list[Run]:
    """Every results.json under `root` (recursively), one Run each; a later duplicate replaces an earlier one.

    `metric`: None (each run's `primary_metric`) or one of `METRICS`; a run without it is an error
    naming the file.
    """
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such results directory: {root}")
    found: dict[tuple, Run] = {}
    for path in sorted(root.rglob("results.json")):
        data = read_results(path)
        mods = data["modalities"]
        chosen = metric or str(data.get("primary_metric", "accuracy"))
        lacking = [k for k, v in mods.items() if chosen not in v]
        if lacking:
            task = data.get("task", "single_label")
            raise ValueError(f"{path}: no metric {chosen!r} for modalities {lacking} (a {task} run; choose "
                             f"--metric among {sorted(mods[lacking[0]])})")
        run = Run(
            path=path,
            method=str(data["method"]),
            dataset=str(data["dataset"]),
            modalities=tuple(mods),
            seed=int(data["seed"]),
            federated=bool(data["federated"]),
            accuracy={k: float(v[chosen]) for k, v in mods.items()},
            created=str(data.get("created", "")),
            signature=_signature(data.get("config", {})),
            metric=chosen,
            forms=_forms(mods, chosen),
        )
        key = (run.dataset, run.modalities, run.row, run.seed)
        if key in found:
            old = found[key]
            keep, drop = (run, old) if run.created >= old.created else (old, run)
            log.warning("two runs of %s on %s with seed %d: using %s, ignoring %s",
                        run.row, run.dataset, run.seed, keep.path, drop.path)
            run = keep
        found[key] = run
    return list(found.values())


def _forms(mods: dict, metric: str) -> dict[str, dict[str, float]]:
    """{AS_TRAINED: {modality: value}, CALIBRATED: {...}} of a headline metric.

    {} for a metric that already names its form, or a run that lacks either.
    """
    if metric.endswith(CALIBRATION_SUFFIXES):
        return {}
    keys = {AS_TRAINED: f"{metric}_before_calibration", CALIBRATED: f"{metric}_after_calibration"}
    if not all(k in v for v in mods.values() for k in keys.values()):
        return {}
    return {form: {m: float(v[key]) for m, v in mods.items()} for form, key in keys.items()}


def with_stronger_baseline(runs: Sequence[Run]) -> tuple[list[Run], dict[tuple[str, tuple, str], str]]:
    """The runs with the baseline of record.

    Every baseline run's values replaced, per column (data set, modalities, centralized or
    federated; modality), by the stronger of its forms over the column's seeds
    (`stronger_baseline`), plus each form as a row of its own. Returns (runs, {(row, (dataset,
    modalities), modality): the form chosen}).
    """
    columns: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        if r.method == BASELINE and r.forms:
            columns[(r.row, r.dataset, r.modalities)].append(r)
    chosen: dict[tuple[str, tuple, str], str] = {}
    for (row, dataset, mods), members in columns.items():
        for m in mods:
            _, form = stronger_baseline({r.seed: r.forms[AS_TRAINED][m] for r in members},
                                        {r.seed: r.forms[CALIBRATED][m] for r in members})
            chosen[(row, (dataset, mods), m)] = form
    out = []
    for r in runs:
        if r.method != BASELINE or not r.forms:
            out.append(r)
            continue
        key = (r.dataset, r.modalities)
        out.append(replace(r, accuracy={m: r.forms[chosen[(r.row, key, m)]][m] for m in r.modalities}))
        out += [replace(r, accuracy=dict(r.forms[form]), variant=form) for form in (AS_TRAINED, CALIBRATED)]
    return out, chosen


# ----------------------------------------------------------------------------- summarising


@dataclass
class Cell:
    """The values of one table cell, one per seed."""

    values: list[float] = field(default_factory=list)  # fractions in [0, 1], one per seed
    seeds: list[int] = field(default_factory=list)  # the seed of each value
    mark: str = ""  # after the value (CALIBRATED_MARK: the baseline's calibrated form)

    def by_seed(self) -> dict[int, float]:
        """The cell's values by seed."""
        return dict(zip(self.seeds, self.values))

    @property
    def n(self) -> int:
        """Number of seeds."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean in percent (NaN when empty)."""
        return 100 * statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation in percent (NaN below two seeds)."""
        return 100 * statistics.stdev(self.values) if self.n > 1 else math.nan

    def text(self, digits: int = 2) -> str:
        """The cell as "mean ± std" in percent."""
        if not self.values:
            return "-"
        if self.n == 1:
            return f"{self.mean:.{digits}f}{self.mark}"
        return f"{self.mean:.{digits}f}{self.mark} ± {self.std:.{digits}f}"


@dataclass
class Table:
    """A table of methods (rows) by data set and modality (columns)."""

    title: str
    groups: list[tuple[str, tuple[str, ...]]]  # (data-set label, modalities)
    rows: list[str]  # method row keys
    cells: dict[tuple[str, str, str], Cell]  # (row, group label, modality or "Mean") -> cell
    seeds: dict[tuple[str, str], list[int]]  # (row, group label) -> seeds

    def header(self) -> list[str]:
        """The column headers."""
        cols = ["Method"]
        for label, mods in self.groups:
            cols += [f"{label} {m}" for m in mods] + [f"{label} Mean"]
        return cols

    def to_markdown(self, digits: int = 2) -> str:
        """The table as Markdown, with its footnote."""
        head = self.header()
        lines = [f"### {self.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            cells = [row_label(row)]
            for label, mods in self.groups:
                cells += [self.cells.get((row, label, m), Cell()).text(digits) for m in (*mods, "Mean")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", self.footnote()]
        paired = self.paired_rows()
        if paired:
            lines += ["", f"Paired difference, method − {row_label(BASELINE)} on the same seeds and test sets "
                      "(points, mean [95% t interval]):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for row, diffs in paired:
                lines.append("| " + " | ".join([row_label(row)] + [d.text(digits=digits) for d in diffs]) + " |")
        return "\n".join(lines)

    def paired_rows(self) -> list[tuple[str, list[Paired]]]:
        """Per non-baseline row, the paired difference to the baseline row of the same kind.

        Same kind: centralized or federated; in every column, over the seeds both have.
        """
        out = []
        for row in self.rows:
            if _base_method(row) == BASELINE or _is_variant(row):
                continue
            base_row = BASELINE + (" (federated)" if row.endswith(" (federated)") else "")
            if not any(k[0] == base_row for k in self.cells):
                continue
            diffs = []
            for label, mods in self.groups:
                for m in (*mods, "Mean"):
                    a, b = self.cells.get((row, label, m), Cell()), self.cells.get((base_row, label, m), Cell())
                    diffs.append(paired_difference(a.by_seed(), b.by_seed()))
            out.append((row, diffs))
        return out

    def paired_csv(self) -> str:
        """The paired differences to the baseline as CSV."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        head = ["method", "baseline"]
        for label, mods in self.groups:
            for m in (*mods, "Mean"):
                head += [f"{label} {m} diff", f"{label} {m} ci_low", f"{label} {m} ci_high", f"{label} {m} n"]
        writer.writerow(head)
        for row, diffs in self.paired_rows():
            line = [row_label(row), row_label(BASELINE)]
            for d in diffs:
                line += [_num(100 * d.mean), _num(100 * d.low), _num(100 * d.high), d.n]
            writer.writerow(line)
        return buf.getvalue()

    def footnote(self) -> str:
        """What the cells show and over which seeds."""
        counts = {len(s) for s in self.seeds.values()}
        seeds = sorted({x for s in self.seeds.values() for x in s})
        text = "Mean ± sample std over seeds"
        if len(counts) == 1:
            text += f" ({counts.pop()} per cell: seeds {', '.join(map(str, seeds))})."
        else:
            detail = "; ".join(f"{row_label(r)} on {g}: {len(s)}" for (r, g), s in sorted(self.seeds.items()))
            text += f"; seeds per cell differ ({detail})."
        if any(_is_variant(r) for r in self.rows):
            text += (f" {row_label(BASELINE)}: in each column the stronger of the model as trained and after "
                     f"Algorithm 1 (the higher mean over seeds; {CALIBRATED_MARK}: after Algorithm 1), the baseline "
                     "of record of every paired difference; both forms follow it.")
        return text

    def to_csv(self) -> str:
        """The table's means and standard deviations as CSV."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        head = ["method"]
        for label, mods in self.groups:
            for m in (*mods, "Mean"):
                head += [f"{label} {m} mean", f"{label} {m} std"]
            head.append(f"{label} n")
        writer.writerow(head)
        for row in self.rows:
            line = [row_label(row)]
            for label, mods in self.groups:
                for m in (*mods, "Mean"):
                    c = self.cells.get((row, label, m), Cell())
                    line += [_num(c.mean), _num(c.std)]
                line.append(len(self.seeds.get((row, label), [])))
            writer.writerow(line)
        return buf.getvalue()


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def row_label(row: str) -> str:
    """The label a table shows for a row key."""
    base, fed = (row[: -len(" (federated)")], " (federated)") if row.endswith(" (federated)") else (row, "")
    method, _, variant = base.partition(", ")
    if variant and method == BASELINE:
        return VARIANT_LABELS[variant] + fed
    return METHOD_LABELS.get(base, base) + fed


def _is_variant(row: str) -> bool:
    """A row of one of the baseline's forms (listed under the baseline of record)."""
    return ", " in _base_method(row)


def _base_method(row: str) -> str:
    return row[: -len(" (federated)")] if row.endswith(" (federated)") else row


def _group_labels(runs: Iterable[Run]) -> dict[tuple[str, tuple[str, ...]], str]:
    """Column-group label per (data set, modalities): the data-set name, plus the modalities if ambiguous."""
    keys = sorted({(r.dataset, r.modalities) for r in runs})
    per_dataset = defaultdict(list)
    for ds, mods in keys:
        per_dataset[ds].append(mods)
    return {
        (ds, mods): ds if len(per_dataset[ds]) == 1 else f"{ds} [{'+'.join(mods)}]" for ds, mods in keys
    }


def build_tables(runs: Sequence[Run]) -> list[Table]:
    """Tables 1 and 2 (and one for other methods) from the runs.

    Empty tables are left out. The baseline's row is its stronger form per column
    (`with_stronger_baseline`).
    """
    runs, chosen = with_stronger_baseline(runs)
    labels = _group_labels(runs)
    groups = [(labels[k], k[1]) for k in sorted(labels, key=lambda k: labels[k])]
    cells: dict[tuple[str, str, str], Cell] = defaultdict(Cell)
    seeds: dict[tuple[str, str], list[int]] = defaultdict(list)
    signatures: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in sorted(runs, key=lambda r: r.seed):
        g = labels[(r.dataset, r.modalities)]
        for m, acc in r.accuracy.items():
            cells[(r.row, g, m)].values.append(acc)
            cells[(r.row, g, m)].seeds.append(r.seed)
        cells[(r.row, g, "Mean")].values.append(r.mean)
        cells[(r.row, g, "Mean")].seeds.append(r.seed)
        seeds[(r.row, g)].append(r.seed)
        signatures[(r.row, g)].add(r.signature)
    for (row, key, m), form in chosen.items():
        if form == CALIBRATED:
            cells[(row, labels[key], m)].mark = CALIBRATED_MARK
    for (row, g), sigs in signatures.items():
        if len(sigs) > 1 and not _is_variant(row):
            log.warning("%s on %s: the seeds were run with different settings (%d distinct configs)",
                        row_label(row), g, len(sigs))
    present = sorted({r.row for r in runs})
    known = {m for _, methods in TABLES for m in methods}
    used = sorted({r.metric for r in runs})
    label = metric_label(used[0]) if len(used) == 1 else " / ".join(metric_label(m) for m in used)
    tables = []
    for title, methods in TABLES:
        rows = [row for m in methods for kind in ("", " (federated)")
                for row in (m + kind, *(f"{m}, {form}{kind}" for form in (AS_TRAINED, CALIBRATED))) if row in present]
        if rows:
            tables.append(_restrict(title.format(metric=label), rows, groups, cells, seeds))
    other = [row for row in present if _base_method(row).partition(", ")[0] not in known]
    if other:
        tables.append(_restrict(OTHER_TABLE.format(metric=label), other, groups, cells, seeds))
    return tables


def _restrict(title, rows, groups, cells, seeds) -> Table:
    used = [(label, mods) for label, mods in groups if any((r, label) in seeds for r in rows)]
    baselines = {BASELINE, f"{BASELINE} (federated)"}  # kept for the paired differences of every table
    return Table(
        title, used, rows,
        {k: v for k, v in cells.items() if k[0] in rows or k[0] in baselines},
        {k: v for k, v in seeds.items() if k[0] in rows},
    )


def runs_csv(runs: Sequence[Run], metric: str | None = None) -> str:
    """Every run's accuracy per modality as CSV (one row per run and modality)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "method", "dataset", "federated", "seed", "modality", "metric", "value"])
    for r in sorted(runs, key=lambda r: (r.dataset, r.row, r.seed)):
        for m, acc in r.accuracy.items():
            writer.writerow([str(r.path), r.method, r.dataset, r.federated, r.seed, m, r.metric, f"{acc:.6f}"])
    return buf.getvalue()


def make_tables(root: str | Path, out: str | Path | None = None, metric: str | None = None,
                digits: int = 2) -> str:
    """The Markdown of all tables for the runs under `root`.

    With `out`, also write the files: tables.md, table1.md/.csv, table2.md/.csv (table3.* for other
    methods), table<N>_paired.csv (the paired differences to the baseline) and runs.csv.
    """
    runs = collect_runs(root, metric)
    if not runs:
        raise FileNotFoundError(f"no results.json under {root}")
    tables = build_tables(runs)
    used = ", ".join(f"`{m}`" for m in sorted({r.metric for r in runs}))
    note = f"Metric: {used}{'' if metric else ' (each run task’s headline metric)'}; {len(runs)} runs under `{root}`."
    markdown = "\n\n".join([note] + [t.to_markdown(digits) for t in tables]) + "\n"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tables.md").write_text(markdown)
        for i, t in enumerate(tables, start=1):
            (out / f"table{i}.md").write_text(t.to_markdown(digits) + "\n")
            (out / f"table{i}.csv").write_text(t.to_csv())
            if t.paired_rows():
                (out / f"table{i}_paired.csv").write_text(t.paired_csv())
        (out / "runs.csv").write_text(runs_csv(runs, metric))
    return markdown
