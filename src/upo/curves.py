"""Training curves from a run's metrics.jsonl: the panels people check first, as PNGs in RUN_DIR/plots/.

`overview.png` holds every panel whose metrics the run logged; each panel is also written alone
(`loss.png`, `rewards.png`, ...). Train and eval curves of a metric share one axes and colour
(train: line, eval: dashed with markers). Drawn on matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from upo.metrics import read_metrics

# file stem -> (title, metric names without their train/ or eval/ prefix)
PANELS: dict[str, tuple[str, list[str]]] = {
    "loss": ("loss", ["loss"]),
    "rewards": ("implicit rewards beta * log(pi / pi_ref)", ["rewards/chosen", "rewards/rejected"]),
    "margins": ("reward margin (chosen - rejected)", ["rewards/margins"]),
    "accuracies": ("reward accuracy (chosen > rejected)", ["rewards/accuracies"]),
    "upo_terms": ("UPO terms: preference, auxiliary, value", ["upo/pref_loss", "upo/aux_loss", "upo/value_loss"]),
    "upo_weights": ("UPO advantage weight exp(A / eta), mean", ["upo/weight_mean"]),
    "kl": ("KTO reference point (KL estimate)", ["kto/kl"]),
    "grad_norm": ("gradient norm (before clipping)", ["grad_norm"]),
    "lr": ("learning rate", ["lr"]),
}
SPLITS = (("train", "-", None), ("eval", "--", "o"))  # prefix, line style, marker
COLUMNS = 3  # panels per row of the overview


Series = dict[str, tuple[list[int], list[float]]]  # "train/loss" -> (steps, values)


def read_series(path: str | Path) -> Series:
    """Every numeric metric of a metrics.jsonl as (steps, values); "nan"/"inf" strings become floats."""
    series: Series = {}
    for row in read_metrics(path):
        for key, value in row.items():
            if key != "step":
                steps, values = series.setdefault(key, ([], []))
                steps.append(row["step"])
                values.append(float(value))
    return series


def present_panels(series: Series) -> list[str]:
    """The PANELS (stems) with at least one of their metrics logged, train or eval."""
    return [stem for stem, (_, names) in PANELS.items()
            if any(f"{split}/{name}" in series for split, _, _ in SPLITS for name in names)]


def plot_curves(run_dir: str | Path, output_dir: str | Path | None = None) -> list[Path]:
    """Write overview.png and one PNG per present panel for RUN_DIR/metrics.jsonl; returns the paths
    (overview first). `output_dir` defaults to RUN_DIR/plots."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found: RUN_DIR must be a `upo train` run folder")
    series = read_series(metrics)
    stems = present_panels(series)
    if not stems:
        raise ValueError(f"{metrics} holds none of the plotted metrics ({', '.join(PANELS)})")
    out = Path(output_dir) if output_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)

    rows = math.ceil(len(stems) / COLUMNS)
    cols = min(len(stems), COLUMNS)
    overview = Figure(figsize=(4.8 * cols, 3.4 * rows), dpi=100)
    FigureCanvasAgg(overview)
    for i, stem in enumerate(stems):
        _draw(overview.add_subplot(rows, cols, i + 1), stem, series)
    overview.suptitle(f"{run_dir.resolve().name}: training curves", fontsize=12)
    overview.tight_layout()
    paths = [out / "overview.png"]
    overview.savefig(paths[0])

    for stem in stems:
        fig = Figure(figsize=(6.4, 4.2), dpi=100)
        FigureCanvasAgg(fig)
        _draw(fig.add_subplot(), stem, series)
        fig.tight_layout()
        paths.append(out / f"{stem}.png")
        fig.savefig(paths[-1])
    return paths


def _draw(ax, stem: str, series: Series) -> None:
    """One panel: each of its metrics in its own colour, train as a line, eval dashed with markers."""
    title, names = PANELS[stem]
    for i, name in enumerate(names):
        colour = f"C{i}"
        for split, style, marker in SPLITS:
            key = f"{split}/{name}"
            if key in series:
                steps, values = series[key]
                ax.plot(steps, values, style, color=colour, label=key,
                        marker=marker or ("o" if len(steps) == 1 else None), markersize=4)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("optimizer step", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))  # learning rates as 1e-4, not 0.0001
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
