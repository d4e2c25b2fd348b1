"""Plots from results files; never retrains.

    python plotting.py                      # every results/*.json under the repository root
    python plotting.py --out runs learning_rate

For each experiment: loss, training accuracy and validation accuracy against
epoch (one line per setting, the mean over seeds with a band of one standard
deviation where there are several), and the final test accuracy per setting
(error bars over seeds), and, where the sweep varies one number, the final
validation and test accuracy against that number (<experiment>_hparam.png, on a
log axis for learning rates).
"""
import argparse
import os
import sys
import warnings

import numpy as np

from results import ResultsError, experiments_in, read_results, results_path
from storage import WriteError

CURVES = {"loss": "mean training loss", "train_acc": "training accuracy", "val_acc": "validation accuracy"}


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
    from storage import atomic_write
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


def plot_experiment(results: dict, images_dir: str) -> list:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    experiment = results["experiment"]
    groups = group_runs(results)
    written = []
    for key, label in CURVES.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, runs in groups.items():
            mean, std = _mean_std([r["history"][key] for r in runs])
            epochs = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(epochs, mean, label=name if len(runs) == 1 else f"{name} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            if any(r["status"] == "diverged" for r in runs) and len(mean):
                ax.plot(epochs[-1], mean[-1], "x", color=line.get_color(), markersize=10)
        if any(r["status"] == "diverged" for runs in groups.values() for r in runs):
            ax.plot([], [], "kx", label="diverged after this epoch")
        if key == "loss":
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(f"{experiment}: {label}")
        ax.grid(alpha=0.3)
        if groups:
            ax.legend(fontsize=8)
        written.append(_save(fig, plt, os.path.join(images_dir, f"{experiment}_{key}.png")))

    names = list(groups)
    finals = {n: [r for r in groups[n] if r["status"] == "completed"] for n in names}
    test = [mean_std_of([r["test_acc"] for r in finals[n]]) for n in names]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.bar(range(len(names)), [m for m, _ in test], yerr=[s for _, s in test], capsize=4,
           color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    several = any(len(finals[n]) > 1 for n in names)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{experiment}: test accuracy" + (" (mean ± std over seeds)" if several else ""))
    ax.grid(alpha=0.3, axis="y")
    written.append(_save(fig, plt, os.path.join(images_dir, f"{experiment}_test_acc.png")))

    axis = _numeric_axis(groups)
    if axis:  # final accuracies against the swept value itself
        values = np.array([groups[n][0]["params"][axis] for n in names], dtype=float)
        order = np.argsort(values)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, label in (("val_acc", "final validation accuracy"), ("test_acc", "test accuracy")):
            pairs = [mean_std_of([r["test_acc"] if key == "test_acc" else r["history"]["val_acc"][-1]
                                  for r in finals[n]]) for n in names]
            means, stds = np.array(pairs, dtype=float).T
            ax.errorbar(values[order], means[order], yerr=stds[order], marker="o", capsize=4, label=label)
        if axis == "lr":
            ax.set_xscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{experiment}: accuracy against {axis}" + (" (mean ± std over seeds)" if several else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, plt, os.path.join(images_dir, f"{experiment}_hparam.png")))
    return written


def main(argv=None) -> int:
    root = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="Redraw the plots of experiments from their results files.")
    p.add_argument("experiments", nargs="*", help="experiment names (default: every results/*.json)")
    p.add_argument("--out", default=root, help="root holding results/ and images/ (default: the repository root)")
    args = p.parse_args(argv)
    found = experiments_in(args.out)
    names = args.experiments or found
    if not names:
        print(f"error: no results files in {os.path.join(args.out, 'results')}; run a main_*.py script first",
              file=sys.stderr)
        return 1
    for name in names:
        if name not in found:
            print(f"error: {results_path(args.out, name)} does not exist; run main_{name}.py first", file=sys.stderr)
            return 1
        try:
            results = read_results(args.out, name)
            for written in plot_experiment(results, os.path.join(args.out, "images")):
                print(written)
        except (ResultsError, WriteError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
