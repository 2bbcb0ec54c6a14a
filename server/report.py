"""What the person who started `flwr run` sees.

A progress line per round, the final per-modality table, and `curves.png` beside results.json.

Kept apart from the round driver so that its output can change without touching the
protocol, and testable without a federation (plain dicts in, text and a PNG out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fed_uml.results import PRIMARY_METRIC, TASK_METRICS, task_of_entry


def _clock(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress(server_round: int, num_rounds: int, elapsed: float, rounds_done: int) -> str:
    """`round k/R, 0:42 elapsed, ~1:03 left`.

    The time left extrapolates the mean round of this run (`rounds_done` rounds in `elapsed`
    seconds; a resumed run counts only its own).
    """
    left = num_rounds - server_round
    eta = f"~{_clock(elapsed / rounds_done * left)} left" if rounds_done > 0 and left > 0 else "last round"
    return f"round {server_round}/{num_rounds}, {_clock(elapsed)} elapsed, {eta}"


SUMMARY_COLUMNS = ("modality", "accuracy", "before cal.", "after cal.", "institutions", "train", "test")
# multi-label: every metric of the deployed model, then the headline metric before and after calibration
MULTI_LABEL_COLUMNS = ("modality", "mAP macro", "mAP micro", "F1 macro", "mAP macro before cal.",
                       "mAP macro after cal.", "institutions", "train", "test")


def _task(modalities: Mapping[str, Mapping]) -> str:
    return task_of_entry(next(iter(modalities.values()))) if modalities else "single_label"


def summary_table(modalities: Mapping[str, Mapping], calibrated: bool) -> str:
    """The per-modality results as an aligned text table.

    Accuracy, or for multi-label runs mAP and F1, of the deployed model; its headline metric before
    and after calibration.
    """
    task = _task(modalities)
    primary = PRIMARY_METRIC[task]
    columns = SUMMARY_COLUMNS if task == "single_label" else MULTI_LABEL_COLUMNS
    rows = [columns]
    for mod, m in modalities.items():
        deployed = [f"{m[k]:.4f}" for k in TASK_METRICS[task]]
        rows.append((mod, *deployed, f"{m[f'{primary}_before_calibration']:.4f}",
                     f"{m[f'{primary}_after_calibration']:.4f}", str(m.get("institutions", "")),
                     str(m["n_train"]), str(m["n_test"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    what = "accuracy" if task == "single_label" else "mAP and F1"
    lines.append(f"({what}: the deployed model, {'after' if calibrated else 'before'} BN calibration)")
    return "\n".join(lines)


def plot_curves(history: Sequence[Mapping], modalities: Mapping[str, Mapping], num_rounds: int,
                path: str | Path) -> Path | None:
    """Evaluation accuracy (multi-label runs: macro mAP) per modality per round.

    Each modality's value before and after calibration is marked at the last round; None when no
    round was evaluated.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if modalities:
        primary = PRIMARY_METRIC[_task(modalities)]
    else:
        primary = "map_macro" if any(k.endswith("/test_map_macro") for r in history for k in r) else "accuracy"
    key = f"test_{primary}"
    names = list(modalities) or sorted({k.split("/")[0] for r in history for k in r if k.endswith(f"/{key}")})
    curves = {m: [(r["round"], r[f"{m}/{key}"]) for r in history if f"{m}/{key}" in r] for m in names}
    if not any(curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for i, (mod, points) in enumerate(curves.items()):
        color = f"C{i}"
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 40 else None, color=color, label=f"{mod} (evaluation)")
        if mod in modalities:
            m = modalities[mod]
            ax.scatter([num_rounds], [m[f"{primary}_before_calibration"]], marker="o", facecolors="none",
                       edgecolors=color, zorder=3)
            ax.scatter([num_rounds], [m[f"{primary}_after_calibration"]], marker="*", s=120, color=color, zorder=3,
                       label=f"{mod} after BN calibration")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy" if primary == "accuracy" else "test mAP (macro)")
    ax.set_xlim(0.5, num_rounds + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("federated run: evaluation per round; o before, * after calibration", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
