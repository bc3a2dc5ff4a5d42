"""One PNG per auxiliary metric: the preference metric (y) against it (x), every point labelled with
its 95% interval bars, and the Pareto fronts of the preference-only points, of UPO's and of a steered
UPO run's conditions drawn through their members.

Drawn on matplotlib's Agg canvas directly (no pyplot): no display, no global figure state.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STYLE = {  # group -> (marker, colour, legend label)
    "base": ("*", "black", "base model"),
    "preference": ("o", "tab:blue", "preference only"),
    "upo": ("s", "tab:red", "UPO"),
    "auxiliary": ("^", "tab:green", "baselines given r_a"),
    "steered": ("D", "tab:purple", "UPO steered (one run)"),
}
BETTER = {"max": "higher is better", "min": "lower is better"}


def slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def _spread(rows: list[dict], metric: str) -> list[list[float]]:
    """[[below], [above]]: the distance from each point's value to its interval's ends (error bars)."""
    return [[max(r["metrics"][metric] - r["intervals"][metric][0], 0.0) for r in rows],
            [max(r["intervals"][metric][1] - r["metrics"][metric], 0.0) for r in rows]]


def plot_title(entry: dict) -> str:
    """The axes, and the figure the plot is drawn for: UPO's hypervolume gain over the preference-only
    front, else (a sweep without preference-only points) the steered front's share of the grid's."""
    (pref, aux) = entry["axes"]
    figures = [("hypervolume gain of UPO over the preference-only front", entry["hv_gain"],
                entry.get("hv_gain_interval")),
               ("hypervolume of UPO steered / UPO (grid)", entry.get("hv_ratio_steered"),
                entry.get("hv_ratio_steered_interval"))]
    name, value, interval = next(((n, v, i) for n, v, i in figures if v is not None), (None, None, None))
    if value is None:
        return f"{pref} vs {aux}"
    return (f"{pref} vs {aux}\n{name}: {value:.3f}"
            + (f" (95% interval {interval[0]:.3f} to {interval[1]:.3f})" if interval else ""))


def plot_frontier(rows: list[dict], entry: dict, path: Path) -> Path:
    """Plot the two axes of summary `entry` (preference metric, auxiliary metric) for `rows`."""
    (pref, aux), (pref_dir, aux_dir) = entry["axes"], entry["directions"]
    usable = [r for r in rows if r["metrics"].get(pref) is not None and r["metrics"].get(aux) is not None]
    fig = Figure(figsize=(7.5, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for group, (marker, colour, label) in STYLE.items():
        members = [r for r in usable if r["group"] == group]
        if members:
            ax.scatter([r["metrics"][aux] for r in members], [r["metrics"][pref] for r in members], marker=marker,
                       s=90 if marker == "*" else 45, color=colour, label=label, zorder=3)
        bars = [r for r in members if aux in r.get("intervals", {}) and pref in r.get("intervals", {})]
        if bars:
            ax.errorbar([r["metrics"][aux] for r in bars], [r["metrics"][pref] for r in bars],
                        xerr=_spread(bars, aux), yerr=_spread(bars, pref), fmt="none", ecolor=colour, alpha=0.45,
                        capsize=2, linewidth=1, zorder=2)
    labels: dict[tuple[float, float], list[str]] = {}  # points at the same place share one label
    for r in usable:
        labels.setdefault((r["metrics"][aux], r["metrics"][pref]), []).append(r["name"])
    for xy, names in labels.items():
        text = "\n".join(", ".join(names[i : i + 3]) for i in range(0, len(names), 3))
        ax.annotate(text, xy, textcoords="offset points", xytext=(4, 4), fontsize=7).set_in_layout(False)
    by_name = {r["name"]: r for r in usable}
    for key, colour, style, label in (("preference_front", "tab:blue", "--", "preference-only front"),
                                       ("upo_front", "tab:red", "-", "UPO front"),
                                       ("steered_front", "tab:purple", ":", "UPO steered front")):
        members = sorted((by_name[n] for n in entry.get(key, [])), key=lambda r: r["metrics"][aux])
        if members:
            ax.plot([r["metrics"][aux] for r in members], [r["metrics"][pref] for r in members], style, color=colour,
                    alpha=0.6, label=label, zorder=2)
    ax.set_xlabel(f"{aux} ({BETTER[aux_dir]})")
    ax.set_ylabel(f"{pref} ({BETTER[pref_dir]})")
    ax.set_title(plot_title(entry), fontsize=10)
    ax.margins(x=0.25, y=0.12)  # room for the labels of the outermost points
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
