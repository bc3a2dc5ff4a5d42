"""Training curves: `upo plot RUN_DIR` and the end of `upo train` write PNGs of the logged metrics."""

from __future__ import annotations

import json

import pytest
from helpers import run_config
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

import upo.trainer
from upo.cli import main
from upo.curves import PANELS, _draw, plot_curves, present_panels, read_series
from upo.metrics import read_metrics
from upo.trainer import train

# A DPO run: no UPO terms, no KTO reference point; evaluation at steps 2 and 4.
DPO_ROWS = [
    {"step": s, "train/loss": 0.7 - 0.1 * s, "train/rewards/chosen": 0.1 * s, "train/rewards/rejected": -0.1 * s,
     "train/rewards/margins": 0.2 * s, "train/rewards/accuracies": 0.5 + 0.1 * s, "train/logps/chosen": -20.0,
     "train/grad_norm": "nan" if s == 3 else 1.0 / s, "train/lr": 1e-4, "train/step_seconds": 0.5}
    | ({"eval/loss": 0.75 - 0.1 * s, "eval/rewards/chosen": 0.05 * s, "eval/rewards/accuracies": 0.5} if s % 2 == 0
       else {})
    for s in range(1, 5)
]
DPO_PANELS = ["loss", "rewards", "margins", "accuracies", "grad_norm", "lr"]


def _run_dir(tmp_path, rows=DPO_ROWS):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_only_panels_whose_metrics_were_logged_are_drawn(tmp_path):
    run = _run_dir(tmp_path)
    assert present_panels(read_series(run / "metrics.jsonl")) == DPO_PANELS
    paths = plot_curves(run)
    assert paths == [run / "plots" / "overview.png", *(run / "plots" / f"{stem}.png" for stem in DPO_PANELS)]
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(p.name for p in paths)
    height, width, _ = imread(paths[0]).shape
    assert (width, height) == (3 * 480, 2 * 340)  # 6 panels: 2 rows of 3, 4.8 x 3.4 inches at 100 dpi
    assert imread(paths[1]).shape[:2] == (420, 640)
    assert imread(paths[0]).std() > 0.05  # not a blank canvas


def test_a_run_killed_mid_write_still_plots(tmp_path):
    """A kill can leave metrics.jsonl's last line cut short: the complete rows are plotted."""
    run = _run_dir(tmp_path)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "train/lo')
    assert [row["step"] for row in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert plot_curves(run)[0].exists()


def test_train_and_eval_share_an_axes_and_nan_is_a_gap(tmp_path):
    series = read_series(_run_dir(tmp_path) / "metrics.jsonl")
    assert series["eval/rewards/chosen"] == ([2, 4], [0.1, 0.2])
    steps, values = series["train/grad_norm"]
    assert steps == [1, 2, 3, 4] and values[2] != values[2]  # "nan" in the file -> float nan
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw(ax, "rewards", series)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["train/rewards/chosen", "eval/rewards/chosen", "train/rewards/rejected"]
    assert lines["eval/rewards/chosen"].get_color() == lines["train/rewards/chosen"].get_color()
    assert lines["eval/rewards/chosen"].get_linestyle() == "--" and lines["train/rewards/chosen"].get_linestyle() == "-"


def test_upo_plot_command(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert main(["plot", str(run), "--output_dir", str(tmp_path / "figs")]) == 0
    assert "6 panels" in capsys.readouterr().out
    assert (tmp_path / "figs" / "overview.png").exists() and not (run / "plots").exists()
    assert main(["plot", str(tmp_path / "nothing-here")]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/step_seconds": 1.0}) + "\n")
    assert main(["plot", str(empty)]) == 2
    assert "none of the plotted metrics" in capsys.readouterr().err


def test_plot_help_explains_every_panel(capsys):
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    out = capsys.readouterr().out
    for stem, (_, names) in PANELS.items():
        assert f"{stem}.png" in out and all(name in out for name in names), stem


def test_training_ends_by_drawing_its_curves(tiny_model_dir, pairs_file, tmp_path):
    train(run_config(tiny_model_dir, pairs_file, tmp_path, method="upo", plot_curves=True))
    plots = tmp_path / "run" / "plots"
    assert {"overview.png", "loss.png", "upo_terms.png", "upo_weights.png", "kl.png"} <= {p.name for p in plots.iterdir()}


def test_a_plotting_failure_warns_and_keeps_the_model(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    def broken(run_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(upo.trainer, "plot_curves", broken)
    with pytest.warns(UserWarning, match="could not draw the training curves .RuntimeError: no fonts.; retry with"):
        final = train(run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", plot_curves=True))
    assert (final / "model.safetensors").exists()
