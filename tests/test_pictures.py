"""Pictures: what plotting.plot_experiment and evaluate.plot_confusion draw, read back
from the figures before they are written (markers, percent, chance lines, error bars,
readable ticks, titles clear of the colour bar). Any warning fails a test."""
import os
import re
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

import evaluate
import plotting

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SETTINGS = ((1e-5, 0.3), (1e-4, 0.6), (1e-3, 0.45))  # (lr, final validation accuracy of seed 0)
PLAIN = re.compile(r"^\d+(\.\d+)?$")


@pytest.fixture(autouse=True)
def warnings_fail():
    """Any matplotlib or numpy warning while drawing fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.fixture
def figures(monkeypatch):
    """File name -> figure, for every figure written through plotting._save (evaluate's too)."""
    drawn = {}
    save = plotting._save

    def capture(fig, plt, path):
        drawn[os.path.basename(path)] = fig
        return save(fig, plt, path)
    monkeypatch.setattr(plotting, "_save", capture)
    return drawn


def run(name, params, seed, epochs, status="completed", acc=0.5, loss=(2.3, 0.9)):
    """A run record as the sweep writes it; the loss falls geometrically from loss[0] to loss[1]."""
    val = [acc * (i + 1) / epochs + 0.01 * seed for i in range(epochs)]
    losses = np.geomspace(*loss, epochs) if epochs > 1 else [loss[0]]
    return {"name": name, "params": params, "seed": seed, "status": status,
            "config": {"dataset": "cifar10", "epochs": epochs, "seed": seed}, "classes": CLASSES,
            "history": {"loss": [float(v) for v in losses], "train_acc": [min(v + 0.05, 1.0) for v in val],
                        "val_acc": val},
            "best_val_acc": max(val), "test_acc": val[-1] - 0.02 if status == "completed" else None,
            "epochs_completed": epochs}


def lr_sweep(epochs, seeds, loss=(2.3, 0.9)):
    """Three learning rates with `seeds` seeds each, and lr 0.01 diverged after `epochs` epochs."""
    runs = [run(f"lr_{lr:g}", {"lr": lr}, s, epochs, acc=acc, loss=loss) for lr, acc in SETTINGS for s in range(seeds)]
    runs.append(run("lr_0.01", {"lr": 1e-2}, 0, epochs, status="diverged", loss=loss))
    return {"experiment": "learning_rate", "runs": runs}


def draw(fig):
    """Draw the figure as written (after _save's layout; closed figures lose their Agg canvas); the renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def drawn_lines(ax):
    """The settings' lines: not the chance line, the diverged marker or the legend's entries."""
    return [line for line in ax.lines if not line.get_label().startswith(("_", "chance", "diverged"))]


def chance_lines(ax):
    return [line for line in ax.lines if line.get_label().startswith("chance")]


def labelled_ticks(axis):
    """(value, text) of every labelled tick, major and minor, inside the axis's view."""
    lo, hi = sorted(axis.get_view_interval())
    shown = []
    for locs, formatter in ((axis.get_majorticklocs(), axis.get_major_formatter()),
                            (axis.get_minorticklocs(), axis.get_minor_formatter())):
        texts = formatter.format_ticks(list(locs))
        shown += [(v, t) for v, t in zip(locs, texts) if lo <= v <= hi and t.strip()]
    return shown


def errorbar_xs(ax) -> set:
    """The x of every error bar drawn (by ax.errorbar or ax.bar(yerr=...))."""
    xs = set()
    for c in ax.containers:
        bars = c if isinstance(c, ErrorbarContainer) else getattr(c, "errorbar", None)
        if bars is not None:
            for collection in bars.lines[2]:
                xs |= {round(float(seg[0][0]), 9) for seg in collection.get_segments() if len(seg)}
    return xs


def expected_mean(records, key) -> float:
    return 100 * float(np.mean([r[key] for r in records]))


@pytest.mark.parametrize("epochs, seeds", [(1, 1), (1, 3), (20, 3), (21, 1), (30, 3)])  # markers up to 20 epochs
def test_curves_have_markers_percent_chance_and_integer_epochs(tmp_path, figures, epochs, seeds):
    results = lr_sweep(epochs, seeds)
    plotting.plot_experiment(results, str(tmp_path))
    for key in ("loss", "train_acc", "val_acc"):
        fig = figures[f"learning_rate_{key}.png"]
        draw(fig)
        ax = fig.axes[0]
        lines = drawn_lines(ax)
        assert len(lines) == 4
        for line in lines:  # a marker on every point of a short curve; none on a long one
            assert (line.get_marker() not in (None, "None", "", " ")) == (epochs <= 20), line.get_label()
        lo, hi = ax.get_xlim()
        assert lo <= 0.6 and hi >= epochs + 0.4  # a margin either side of the first and last epoch
        shown = [v for v, _ in labelled_ticks(ax.xaxis)]
        assert shown and all(float(v).is_integer() for v in shown)
        if epochs == 1:
            assert shown == [1.0]
        crosses = [line for line in ax.lines if line.get_marker() == "x" and len(line.get_xdata())]
        assert [list(c.get_xdata()) for c in crosses] == [[epochs]]  # the diverged run, at its last epoch
        assert ax.get_title().startswith("Learning rate: ") and "learning_rate" not in ax.get_title()
        if key == "loss":
            assert not chance_lines(ax)
            continue
        assert "%" in ax.get_ylabel()
        for (lr, _), line in zip(SETTINGS, lines):
            records = [r for r in results["runs"] if r["params"] == {"lr": lr}]
            means = np.mean([r["history"][key] for r in records], axis=0)
            np.testing.assert_allclose(line.get_ydata(), 100 * means)
        (chance,) = chance_lines(ax)
        assert list(chance.get_ydata()) == [10.0, 10.0] and chance.get_linestyle() == "--"
        assert chance.get_label() == "chance (10%)"


@pytest.mark.parametrize("epochs, loss", [(1, (2.3015, 2.3015)), (5, (2.3, 0.9)), (25, (2.3, 0.01))])
def test_log_loss_axis_has_plain_readable_ticks(tmp_path, figures, epochs, loss):
    plotting.plot_experiment(lr_sweep(epochs, 1, loss=loss), str(tmp_path))
    fig = figures["learning_rate_loss.png"]
    draw(fig)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    shown = labelled_ticks(ax.yaxis)
    assert len(shown) >= 3, shown
    for value, text in shown:
        assert PLAIN.match(text), shown  # 2.3, 0.5: no "2.3015x10^0", no mathtext
        assert float(text) == pytest.approx(value, rel=0.01)
    lo, hi = ax.get_ylim()
    assert lo < min(loss) and hi > max(loss)


@pytest.mark.parametrize("seeds", [1, 3])
def test_test_accuracy_bars_in_percent_without_empty_error_bars(tmp_path, figures, seeds):
    results = lr_sweep(4, seeds)
    if seeds > 1:  # one setting with one completed seed among settings with several
        results["runs"] = [r for r in results["runs"] if not (r["params"] == {"lr": 1e-3} and r["seed"] > 0)]
    plotting.plot_experiment(results, str(tmp_path))
    ax = figures["learning_rate_test_acc.png"].axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert all(np.isfinite(heights)) and len(heights) == 3  # lr 0.01 has no completed run: no bar...
    assert "no completed run" in [t.get_text() for t in ax.texts]  # ...but a note
    for (lr, _), height in zip(SETTINGS, heights):
        assert height == pytest.approx(expected_mean([r for r in results["runs"] if r["params"] == {"lr": lr}],
                                                     "test_acc"))
    assert errorbar_xs(ax) == ({0, 1} if seeds > 1 else set())  # only where a setting has several seeds
    dots = [c for c in ax.collections if c.get_label() == "each seed"]  # each seed's own value beside its bar
    if seeds > 1:
        (dots,) = dots
        shown = sorted((round(float(x)), round(float(y), 9)) for x, y in dots.get_offsets())
        expected = sorted((i, round(100 * r["test_acc"], 9)) for i, (lr, _) in enumerate(SETTINGS[:2])
                          for r in results["runs"] if r["params"] == {"lr": lr})
        assert shown == expected
    else:
        assert dots == []
    assert "%" in ax.get_ylabel()
    (chance,) = chance_lines(ax)
    assert list(chance.get_ydata()) == [10.0, 10.0]
    assert ax.get_title().startswith("Learning rate: ")


@pytest.mark.parametrize("seeds", [1, 3])
def test_hparam_plots_the_selection_quantity_in_percent(tmp_path, figures, seeds):
    results = lr_sweep(6, seeds)
    for r in results["runs"]:  # a best epoch before the last: best_val_acc is not the final val_acc
        r["history"]["val_acc"][-1] -= 0.1
        r["best_val_acc"] = max(r["history"]["val_acc"])
    plotting.plot_experiment(results, str(tmp_path))
    ax = figures["learning_rate_hparam.png"].axes[0]
    lines = {line.get_label(): line for line in drawn_lines(ax)}
    assert set(lines) == {"best validation accuracy (selection)", "test accuracy"}
    for label, key in (("best validation accuracy (selection)", "best_val_acc"), ("test accuracy", "test_acc")):
        finished = [[r for r in results["runs"] if r["params"] == {"lr": lr} and r["status"] == "completed"]
                    for lr in (1e-5, 1e-4, 1e-3, 1e-2)]
        expected = [expected_mean(rs, key) if rs else np.nan for rs in finished]
        np.testing.assert_allclose(lines[label].get_xdata(), [1e-5, 1e-4, 1e-3, 1e-2])
        np.testing.assert_allclose(lines[label].get_ydata(), expected)
    assert ax.get_xlabel() == "learning rate" and "%" in ax.get_ylabel()
    assert ax.get_title().startswith("Learning rate: accuracy against learning rate")
    assert errorbar_xs(ax) == ({1e-5, 1e-4, 1e-3} if seeds > 1 else set())
    assert [t.get_text() for t in ax.texts] == ["no completed run"]  # lr 0.01, diverged
    (chance,) = chance_lines(ax)
    assert list(chance.get_ydata()) == [10.0, 10.0]


def test_hparam_of_dropout_names_its_axis_in_words(tmp_path, figures):
    results = {"experiment": "dropout", "runs": [run(f"p{p:g}", {"dropout": p}, 0, 3) for p in (0.0, 0.25, 0.4)]}
    plotting.plot_experiment(results, str(tmp_path))
    ax = figures["dropout_hparam.png"].axes[0]
    assert ax.get_xlabel() == "dropout p"
    assert ax.get_title().startswith("Dropout: ")
    assert errorbar_xs(ax) == set()


@pytest.mark.parametrize("runs", [
    [],
    [run("x", {"lr": 1e-3}, 0, 1, status="failed")],
    [run("x", {"lr": 1e-3}, 0, 1, status="diverged"), dict(run("y", {"lr": 1e-2}, 0, 1, status="diverged"),
                                                          history={"loss": [], "train_acc": [], "val_acc": []})],
])
def test_nothing_completed_still_draws_every_figure_in_words(tmp_path, figures, runs):
    paths = plotting.plot_experiment({"experiment": "activation", "runs": runs}, str(tmp_path))
    assert {f"activation_{k}.png" for k in ("loss", "train_acc", "val_acc", "test_acc")} <= set(figures)
    assert len(paths) == len(figures)
    for name, fig in figures.items():
        ax = fig.axes[0]
        assert ax.get_title().startswith("Activation: "), name
        assert all(np.isfinite(p.get_height()) for p in ax.patches)
        if not name.endswith("_loss.png"):
            (chance,) = chance_lines(ax)
            assert list(chance.get_ydata()) == [10.0, 10.0]


def test_human_names_and_number_of_classes():
    assert plotting.titles() == {
        "learning_rate": "Learning rate", "optimizer": "Optimizer", "weight_regularization": "Weight regularisation",
        "activation": "Activation", "dropout": "Dropout", "consolidated": "Consolidated model"}
    assert plotting.HUMAN_PARAMS["lr"] == "learning rate" and plotting.HUMAN_PARAMS["dropout"] == "dropout p"
    one = run("a", {"lr": 1e-4}, 0, 2)
    assert plotting.num_classes({"runs": [dict(one, classes=["x", "y", "z"])]}) == 3
    bare = {k: v for k, v in one.items() if k != "classes"}
    assert plotting.num_classes({"runs": [dict(bare, config={"dataset": "cifar100"})]}) == 100
    assert plotting.num_classes({"runs": [dict(bare, config={"dataset": "mnist"})]}) == 10
    assert plotting.num_classes({"runs": []}) == 10


@pytest.mark.parametrize("n, title", [(2, "weight_regularization / l1_5e-06_l2_9.5e-05_seed0"),
                                      (10, "consolidated / consolidated_seed0")])
def test_confusion_matrix_in_percent_with_title_clear_of_the_colour_bar(tmp_path, figures, n, title):
    rng = np.random.default_rng(n)
    confusion = rng.integers(0, 30, (n, n)) + np.diag(rng.integers(200, 800, n))
    summary = {"classes": CLASSES[:n], "confusion": confusion.tolist(),
               "test_acc": float(np.trace(confusion) / confusion.sum())}
    evaluate.plot_confusion(summary, title, str(tmp_path / "confusion.png"))
    fig = figures["confusion.png"]
    renderer = draw(fig)
    ax = fig.axes[0]
    (image,) = ax.images
    np.testing.assert_allclose(np.asarray(image.get_array()).sum(axis=1), 100.0)  # each row in % of its class
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "predicted class"  # rows true, columns predicted
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES[:n] == [t.get_text() for t in ax.get_xticklabels()]
    assert image.get_clim() == (0, 100)
    bar = image.colorbar
    assert tuple(bar.ax.get_ylim()) == (0, 100)
    assert bar.ax.get_ylabel() == "% of the true class"
    heading = ax.title.get_window_extent(renderer)
    assert not heading.overlaps(bar.ax.get_tightbbox(renderer))
    assert heading.x0 >= 0 and heading.x1 <= fig.bbox.width and heading.y1 <= fig.bbox.height  # not clipped
    experiment, run_name = title.split(" / ")
    words = " ".join(ax.get_title().split())  # the title may wrap
    assert words.startswith(f"{plotting.titles()[experiment]} / {run_name} test accuracy ")


@pytest.mark.parametrize("values, few", [((100.0, 5000.0), True), ((0.01, 100.0), False), ((0.5, 2.0), None)])
def test_log_ticks_label_the_minor_ticks_only_where_the_data_span_under_three_decades(values, few):
    """Under a decade: plain evenly spaced numbers, no minor ticks; one to three decades: the
    decades and 2 and 5 in each labelled; more: the decades alone labelled. Said of the data's
    span (hi / lo), wherever it lies on the axis: 100 to 5000 spans under two decades."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    try:
        ax.set_yscale("log")
        ax.plot([1, 2], values)
        plotting._log_ticks(ax, np.asarray(values))
        draw(fig)
        shown = sorted(v for v, _ in labelled_ticks(ax.yaxis))
        decades = [v for v in shown if np.isclose(np.log10(v), round(np.log10(v)))]
        if few is None:
            assert len(shown) >= 3 and len(decades) < len(shown)
            assert not list(ax.yaxis.get_minorticklocs())
        elif few:
            assert any(np.isclose(v / 10 ** np.floor(np.log10(v)), 2) for v in shown), shown  # 200, 2000
            assert any(np.isclose(v / 10 ** np.floor(np.log10(v)), 5) for v in shown), shown  # 500
        else:
            assert shown == decades and len(decades) >= 4, shown  # 0.01 ... 100, nothing between
    finally:
        plt.close(fig)


def test_the_seeds_band_runs_from_the_mean_less_one_std_to_the_mean_plus_one(tmp_path, figures):
    """Each curve of several seeds is drawn with a band of its std over seeds either side of its
    mean, epoch by epoch."""
    results = lr_sweep(5, 3)
    for r in results["runs"]:  # seeds that differ by more than a constant, so the std changes by epoch
        r["history"]["val_acc"] = [v * (1 + 0.1 * r["seed"] * i) for i, v in enumerate(r["history"]["val_acc"])]
    plotting.plot_experiment(results, str(tmp_path))
    ax = figures["learning_rate_val_acc.png"].axes[0]
    bands = [c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert len(bands) == len(SETTINGS)  # the diverged lr 0.01 has one seed: no band
    for (lr, _), band in zip(SETTINGS, bands):
        curves = np.array([r["history"]["val_acc"] for r in results["runs"] if r["params"] == {"lr": lr}])
        mean, std = 100 * curves.mean(axis=0), 100 * curves.std(axis=0)
        assert std[-1] > std[1] > 0
        points = np.concatenate([path.vertices for path in band.get_paths()])
        for epoch in range(1, 6):
            ys = points[np.isclose(points[:, 0], epoch), 1]
            assert ys.min() == pytest.approx(mean[epoch - 1] - std[epoch - 1])
            assert ys.max() == pytest.approx(mean[epoch - 1] + std[epoch - 1])


@pytest.mark.parametrize("wrong", [0, 5])
def test_the_mistakes_picture_shows_the_most_confident_mistakes_or_says_there_are_none(tmp_path, figures, wrong):
    """evaluate.py's mistakes picture: the test images predicted wrong, most confident first, each
    titled with its true and predicted class; where there is none, one panel that says so."""
    import types
    import torch
    n = 8
    labels = torch.arange(n) % 3
    logits = torch.full((n, 3), -4.0)
    logits[torch.arange(n), labels] = 4.0  # all right...
    for i in range(wrong):  # ...but the first `wrong`, each predicted (label + 1) % 3, less sure the later it is
        logits[i] = -4.0
        logits[i, (labels[i] + 1) % 3] = 4.0 - 0.5 * i
    images = torch.rand(n, 1, 5, 5)
    split = types.SimpleNamespace(test=types.SimpleNamespace(images=images, indices=torch.arange(n)))
    names = ["zero", "one", "two"]
    evaluate.plot_mistakes(logits, labels, split, names, "t", str(tmp_path / "m.png"))
    (fig,) = figures.values()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    if wrong:
        assert titles == [f"true {names[labels[i]]}\npredicted {names[(labels[i] + 1) % 3]} "
                          f"({100 * logits[i].softmax(0).max():.0f}%)" for i in range(wrong)]
        assert "no wrong predictions" not in texts and len([ax for ax in fig.axes if ax.images]) == wrong
    else:
        assert titles == [] and texts == ["no wrong predictions"]
