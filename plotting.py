"""Plots from results files; never retrains.

    python plotting.py                      # every results/*.json under the repository root
    python plotting.py --out runs learning_rate
    python plotting.py --tensorboard        # and each run for TensorBoard, in runs/ (docs/tensorboard.md)

For each experiment: loss, training accuracy and validation accuracy against
epoch (one line per setting, the mean over seeds with a band of one standard
deviation where there are several), and the final test accuracy per setting
(error bars over seeds, where a setting has several), and, where the sweep
varies one number, the quantity the best setting is chosen on (the mean over
seeds of each run's best validation accuracy) and the test accuracy against that
number (<experiment>_hparam.png, on a log axis for learning rates). Accuracies
are in percent, with a dashed line at chance (100 / number of classes).
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np

import report
from core import ablation
from core import stats
from core import tensorboard
from core.results import ResultsError, experiments_in, fmt, read_results, records_dir, results_path
from core.storage import WriteError, out_folder

CURVES = {"loss": "mean training loss", "train_acc": "training accuracy (%)",
          "val_acc": "validation accuracy (%)"}
HUMAN_PARAMS = {"lr": "learning rate", "dropout": "dropout p", "l1": "L1", "l2": "L2",
                "optimizer": "optimizer", "activation": "activation"}
MARKED_EPOCHS = 20  # curves of at most this many epochs get a marker on every point


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def group_runs(results: dict) -> dict:
    """setting name -> its runs (one per seed) that finished or diverged, in file order."""
    groups = {}
    for run in results["runs"]:
        if run["status"] in ("completed", "diverged"):
            groups.setdefault(run["name"], []).append(run)
    return groups


def _mean_std(rows: list) -> tuple:
    """Mean and std per epoch over runs of possibly different lengths (diverged runs end early)."""
    length = max(len(r) for r in rows)
    padded = np.full((len(rows), length), np.nan)
    for i, r in enumerate(rows):
        padded[i, :len(r)] = [np.nan if v is None else v for v in r]
    with warnings.catch_warnings():  # an epoch that every run has left is all-NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(padded, axis=0), np.nanstd(padded, axis=0)


def mean_std_of(values: list) -> tuple:
    """Mean and sample std (0 for a single value; NaN mean for none)."""
    if not values:
        return float("nan"), 0.0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _save(fig, plt, path: str) -> str:
    """Write the figure atomically (storage.atomic_write): a reader never sees half a PNG."""
    from core.storage import atomic_write
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    finally:
        plt.close(fig)
    return path


def _numeric_axis(groups: dict):
    """The swept parameter if every setting varies exactly one number, else None."""
    keys = {tuple(runs[0]["params"]) for runs in groups.values()}
    if len(keys) != 1 or len(next(iter(keys))) != 1:
        return None
    key = next(iter(keys))[0]
    values = [runs[0]["params"][key] for runs in groups.values()]
    return key if all(isinstance(v, (int, float)) for v in values) else None


def titles() -> dict:
    """{experiment: its title in words}, as the main_*.py scripts declare them (report.study())."""
    return ablation.titles(report.study())


def human(name: str, table: dict | None = None) -> str:
    """The words for an experiment name (titles()), or with table (HUMAN_PARAMS) for a parameter key;
    unknown names as written."""
    table = titles() if table is None else table
    return table.get(name, name.replace("_", " "))


def num_classes(results: dict) -> int:
    """The number of classes: from a run's class names, else its dataset (cifar100: 100, others 10)."""
    runs = results["runs"]
    for run in runs:
        if isinstance(run.get("classes"), list) and len(run["classes"]) >= 2:
            return len(run["classes"])
    datasets = {(run.get("config") or {}).get("dataset") for run in runs}
    return 100 if "cifar100" in datasets else 10


def _chance(ax, classes: int) -> float:
    """A dashed line at chance accuracy, 100 / classes percent, labelled for the legend; returns that level."""
    level = 100 / classes
    ax.axhline(level, color="0.4", linestyle="--", linewidth=1, label=f"chance ({level:.3g}%)")
    return level


def _number(value: float, _=None) -> str:
    """A tick label as a plain number: 2.3, 0.5, 1e+06."""
    return f"{value:.3g}"


def _log_ticks(ax, values) -> None:
    """Readable ticks on a log y axis: plain numbers, enough of them, minor ones labelled
    where the data span under three decades; at least a factor of two around a single value."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator
    values = np.asarray([v for v in values if np.isfinite(v) and v > 0])
    if not len(values):
        return
    lo, hi = values.min(), values.max()
    middle, half = np.sqrt(lo * hi), max(np.sqrt(hi / lo), np.sqrt(2)) * 1.08
    lo, hi = middle / half, middle * half
    ax.set_ylim(lo, hi)
    if hi / lo < 10:  # under a decade: evenly spaced plain numbers
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:  # decades labelled, and 2 and 5 in each where there are fewer than three
        few = hi / lo < 1000
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2, 5) if few else (2, 3, 4, 5, 6, 7, 8, 9)))
        ax.yaxis.set_minor_formatter(FuncFormatter(_number) if few else NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_number))


def _legend(ax) -> None:
    """A small legend, where anything is labelled."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _epoch_axis(ax, length: int) -> None:
    """Integer epochs from 1 to length, half an epoch of margin either side."""
    from matplotlib.ticker import MaxNLocator
    ax.set_xlim(0.5, max(length, 1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def _curve(ax, name: str, runs: list, key: str):
    """One setting's mean curve over its seeds (in % for accuracies) with its spread; returns the plotted means."""
    mean, std = _mean_std([r["history"][key] for r in runs])
    if key != "loss":
        mean, std = 100 * mean, 100 * std
    epochs = np.arange(1, len(mean) + 1)
    marker = "o" if len(mean) <= MARKED_EPOCHS else None
    (line,) = ax.plot(epochs, mean, marker=marker, markersize=4,
                      label=name if len(runs) == 1 else f"{name} (n={len(runs)})")
    if len(runs) > 1 and len(mean) == 1:  # a band over one epoch is invisible
        ax.errorbar(epochs, mean, yerr=std, fmt="none", ecolor=line.get_color(), capsize=4)
    elif len(runs) > 1:
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if any(r["status"] == "diverged" for r in runs) and len(mean):
        ax.plot(epochs[-1], mean[-1], "x", color=line.get_color(), markersize=10)
    return mean


def _curves_figure(plt, results: dict, groups: dict, key: str):
    """Loss, training or validation accuracy against epoch, one line per setting."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    means = [_curve(ax, name, runs, key) for name, runs in groups.items()]
    if any(r["status"] == "diverged" for runs in groups.values() for r in runs):
        ax.plot([], [], "kx", label="diverged after this epoch")
    if key == "loss":
        ax.set_yscale("log")
        _log_ticks(ax, np.concatenate(means) if means else [])
    else:
        _chance(ax, num_classes(results))
    _epoch_axis(ax, max((len(m) for m in means), default=1))
    ax.set_ylabel(CURVES[key])
    ax.set_title(f"{human(results['experiment'])}: {CURVES[key].replace(' (%)', '')}")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def _error_bars(ax, x, means, stds, counts, **style) -> None:
    """Error bars of one std, only where a setting has more than one seed (no zero-height caps)."""
    several = np.asarray(counts) > 1
    if several.any():
        ax.errorbar(np.asarray(x)[several], np.asarray(means)[several], yerr=np.asarray(stds)[several],
                    fmt="none", capsize=4, **style)


def _seed_dots(ax, values: list) -> None:
    """Each seed's own value, a dot beside its setting's bar, where a setting has several: with 3
    seeds a mean and std hide whether one seed lies far from the other two."""
    xs, ys = [], []
    for i, seeds in enumerate(values):
        if len(seeds) > 1:
            xs += list(i + np.linspace(-0.15, 0.15, len(seeds)))
            ys += seeds
    if xs:
        ax.scatter(xs, ys, s=12, color="black", alpha=0.7, zorder=3, label="each seed")


def _no_run_notes(ax, xs) -> None:
    """"no completed run", upright at the foot of the axes, at each x of a setting that has none."""
    for x in xs:
        ax.text(x, 0.02, "no completed run", transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                va="bottom", fontsize=8, color="0.3", bbox=dict(facecolor="white", edgecolor="none", pad=1))


def _test_figure(plt, results: dict, names: list, finals: dict):
    """Mean test accuracy (%) per setting; a setting with no completed run is named, not drawn."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pairs = [mean_std_of([100 * r["test_acc"] for r in finals[n]]) for n in names]
    test = np.array(pairs, dtype=float).reshape(-1, 2)
    counts = [len(finals[n]) for n in names]
    done = [i for i, c in enumerate(counts) if c]
    ax.bar(done, test[done, 0], color="tab:blue", alpha=0.8)
    _error_bars(ax, range(len(names)), test[:, 0], test[:, 1], counts, ecolor="black")
    _seed_dots(ax, [[100 * r["test_acc"] for r in finals[n]] for n in names])
    top = np.nanmax(np.append(test[:, 0] + test[:, 1], _chance(ax, num_classes(results))))
    ax.set_ylim(0, 1.15 * top if top < 87 else 100)
    _no_run_notes(ax, [i for i, c in enumerate(counts) if not c])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.6, max(len(names), 1) - 0.4)
    several = any(c > 1 for c in counts)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{human(results['experiment'])}: test accuracy" + (" (mean ± std over seeds)" if several else ""))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    return fig


def _hparam_figure(plt, results: dict, groups: dict, finals: dict, axis: str):
    """The selection's quantity (mean best validation accuracy) and test accuracy against the swept value."""
    names = list(groups)
    values = np.array([groups[n][0]["params"][axis] for n in names], dtype=float)
    order = np.argsort(values)
    counts = np.array([len(finals[n]) for n in names])[order]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (("best_val_acc", "best validation accuracy (selection)"), ("test_acc", "test accuracy")):
        pairs = np.array([mean_std_of([100 * r[key] for r in finals[n]]) for n in names], dtype=float)[order]
        (line,) = ax.plot(values[order], pairs[:, 0], marker="o", label=label)
        _error_bars(ax, values[order], pairs[:, 0], pairs[:, 1], counts, ecolor=line.get_color())
    _chance(ax, num_classes(results))
    # the x range holds every swept value, those without a completed run (no point drawn) too
    ax.update_datalim(np.column_stack([values, np.full(len(values), 50.0)]), updatey=False)
    if axis == "lr":
        ax.set_xscale("log")
    _no_run_notes(ax, values[order][counts == 0])
    ax.set_xlabel(human(axis, HUMAN_PARAMS))
    ax.set_ylabel("accuracy (%)")
    several = any(c > 1 for c in counts)
    ax.set_title(f"{human(results['experiment'])}: accuracy against {human(axis, HUMAN_PARAMS)}"
                 + (" (mean ± std over seeds)" if several else ""))
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def _isolation_figure(plt, results: dict):
    """A tuned sweep (--tune-lr): each setting's best validation and test accuracy at its chosen rate,
    with 95% intervals over seeds, beside the same at its own fixed rate where that was in the grid."""
    table = stats.tuning(results)
    names = list(table)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(names) + 3), 4.5))
    views = (("chosen", "after tuning", "o", 1.0, -0.15), ("own", "at the fixed rate", "s", 0.45, 0.15))
    for which, label, marker, alpha, shift in views:
        # at the fixed rate: only the settings whose own rate was in the grid
        rows = {r["setting"]: r for r in stats.summarize(stats.at_rates(results, which))[0]}
        for key, colour, dx in (("best_val_acc", "tab:blue", -0.04), ("test_acc", "tab:orange", 0.04)):
            have = [i for i, n in enumerate(names) if n in rows and rows[n][f"{key}_mean"] is not None]
            means = [100 * rows[names[i]][f"{key}_mean"] for i in have]
            cis = [rows[names[i]][f"{key}_ci95"] for i in have]
            err = np.array([[m - 100 * c[0], 100 * c[1] - m] if c else [0, 0] for m, c in zip(means, cis)]).T
            what = "best validation" if key == "best_val_acc" else "test"
            ax.errorbar(x[have] + shift + dx, means, yerr=err.reshape(2, -1) if any(cis) else None, fmt=marker,
                        color=colour, alpha=alpha, capsize=3, label=f"{what}, {label}")
    _chance(ax, num_classes(results))
    chosen = [n + ("" if table[n]["chosen_lr"] is None else f"\nchosen lr {fmt(table[n]['chosen_lr'])}"
                   + (" (edge)" if table[n]["at_edge"] else "")) + f"\nfixed lr {fmt(table[n]['own_lr'])}"
              for n in names]
    ax.set_xticks(x, chosen, fontsize=8)
    ax.set_xlim(-0.6, max(len(names), 1) - 0.4)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{human(results['experiment'])}: each setting at its own best learning rate\n"
                 f"(chosen on validation; 95% intervals over seeds)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def plot_experiment(results: dict, images_dir: str) -> list:
    """Draw an experiment's figures into images_dir; returns the paths written. A tuned sweep
    (--tune-lr) is drawn at each setting's chosen rate, with its isolation plot beside."""
    plt = _pyplot()
    tuned = stats.is_tuned(results)
    if tuned:
        whole, results = results, stats.at_rates(results)
    experiment = results["experiment"]
    groups = group_runs(results)
    names = list(groups)
    finals = {n: [r for r in groups[n] if r["status"] == "completed"] for n in names}
    stem = os.path.join(images_dir, experiment)
    written = [_save(_curves_figure(plt, results, groups, key), plt, f"{stem}_{key}.png") for key in CURVES]
    written.append(_save(_test_figure(plt, results, names, finals), plt, f"{stem}_test_acc.png"))
    axis = _numeric_axis(groups)
    if axis:
        written.append(_save(_hparam_figure(plt, results, groups, finals, axis), plt, f"{stem}_hparam.png"))
    if tuned:
        written.append(_save(_isolation_figure(plt, whole), plt, f"{stem}_isolation.png"))
    return written


def missing(out: str, name: str, found: list) -> str:
    """One sentence for an experiment with no results: its script where it is one of the study's."""
    if name in titles():
        return f"{results_path(out, name)} does not exist; run main_{name}.py first"
    return (f"no results for {name!r} in {os.path.join(out, 'results')}; experiments there: "
            f"{', '.join(found) or 'none yet'}")


def not_a_sweeps(out: str, name: str) -> bool:
    """Whether results/<name>.json is another tool's file, such as gpu_check.py's figures, or a
    user's: no run records beside it, and neither runs nor its experiment's name in it. A damaged
    file is a sweep's: reading it says what is wrong."""
    folder = records_dir(out, name)
    if os.path.isdir(folder) and any(f.endswith(".json") and not f.startswith(".") for f in os.listdir(folder)):
        return False
    try:
        with open(results_path(out, name)) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return False
    return not (isinstance(content, dict) and ("runs" in content or content.get("experiment") == name))


def main(argv=None) -> int:
    root = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="Redraw the plots of experiments from their results files.")
    p.add_argument("experiments", nargs="*",
                   help="experiment names (default: every sweep's results/*.json; other files there are skipped)")
    p.add_argument("--out", default=root, type=out_folder,
                   help="root holding results/ and images/ (default: the repository root)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write each recorded run for TensorBoard into <out>/runs/<experiment>/, replacing "
                        "what is there for it (default: off)")
    args = p.parse_args(argv)
    if args.tensorboard and tensorboard.missing():
        print(f"error: --tensorboard: {tensorboard.missing()}", file=sys.stderr)
        return 1
    found = experiments_in(args.out)
    names = args.experiments
    if not names:  # every sweep's results; other JSON files in results/ are named and left alone
        others = [name for name in found if not_a_sweeps(args.out, name)]
        for name in others:
            print(f"skipped {results_path(args.out, name)}: not a sweep's results file (it holds no runs)")
        names = [name for name in found if name not in others]
    if not names:
        print(f"error: no results files in {os.path.join(args.out, 'results')}; run a main_*.py script first",
              file=sys.stderr)
        return 1
    for name in names:
        if name not in found:
            print(f"error: {missing(args.out, name, found)}", file=sys.stderr)
            return 1
        try:
            results = read_results(args.out, name)
            for written in plot_experiment(results, os.path.join(args.out, "images")):
                print(written)
            for written in tensorboard.write_results(args.out, results) if args.tensorboard else ():
                print(written)
        except (ResultsError, WriteError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
