"""Build <out>/results/REPORT.md from the results files present; never retrains.

    python report.py                 # results/ under the repository root
    python report.py --out runs

One section per ablation: a table over seeds (mean ± std, 95% interval, n), a
paired comparison of every setting with the best one, the plots, and a verdict
that states its uncertainty; the consolidated model against the baseline; and
the study's published findings beside what these runs found.
"""
import argparse
import os
import sys

import stats
from results import experiments_in, read_results
from storage import WriteError, atomic_write_text

EXPERIMENTS = ("learning_rate", "optimizer", "weight_regularization", "activation", "dropout", "consolidated")

# The original study's conclusions (MIE424 AlexNet Improvements, 2022), and the
# run name under which this repository trains the setting it declared best.
PUBLISHED = {
    "learning_rate": ("lr_0.0001", "Adam's learning rate 1e-4 is best of 1e-6 ... 1e-2"),
    "optimizer": ("adam_lr0.0001", "Adam (lr 1e-4) is best, about 70% validation accuracy; Adagrad (lr 0.01) "
                                   "had a first-epoch loss of about 7.9 million and ended near 49%"),
    "weight_regularization": ("l1_5e-06_l2_9.5e-05", "the elastic net L1 = 5e-6, L2 = 9.5e-5 is best"),
    "activation": ("leakyrelu", "LeakyReLU is best"),
    "dropout": ("p0.25", "dropout 0.25 is best; without dropout validation accuracy plateaued near 83% "
                         "while training accuracy reached 99.5%"),
    "consolidated": ("consolidated", "the consolidated model (Adam 1e-4, elastic net, LeakyReLU, dropout 0.25) "
                                     "is the final, improved model"),
}
PLOTS = ("loss", "train_acc", "val_acc", "test_acc", "hparam")


def pts(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def interval(ci) -> str:
    return "-" if ci is None else f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def mean_std(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def compare(rows: dict, a: str, b: str) -> str:
    """One sentence: how far setting a's test accuracy lies from b's, with its uncertainty."""
    ra, rb = rows[a], rows[b]
    if ra["test_acc_mean"] is None or rb["test_acc_mean"] is None:
        return f"{a} or {b} has no completed run to compare."
    diff = 100 * (ra["test_acc_mean"] - rb["test_acc_mean"])
    lead = "leads" if diff >= 0 else "trails"
    # the paired comparison is stored against the best setting: use whichever side holds it
    paired = ra["vs_best"] if rb.get("is_best") else rb["vs_best"] if ra.get("is_best") else None
    if paired and paired["ci95"] is not None and paired["p_value"] is not None:
        half = 100 * (paired["ci95"][1] - paired["ci95"][0]) / 2
        return (f"{a} {lead} {b} by {abs(diff):.2f} ± {half:.2f} test-accuracy points "
                f"(95% interval of the paired difference), p = {paired['p_value']:.3g}, n = {paired['n']}.")
    n = min(ra["n"], rb["n"])
    return (f"{a} {lead} {b} by {abs(diff):.2f} test-accuracy points from n = {n} seed(s) each, "
            f"too few to tell that from seed-to-seed noise (rerun with --seeds 3 or more).")


def section(experiment: str, results: dict, images_dir: str, images_rel: str) -> tuple:
    summary, best_info = stats.summarize(results)  # recomputed, so older results files work too
    rows = {r["setting"]: r for r in summary}
    best = best_info and best_info["setting"]
    runs = results["runs"]
    cfg = runs[0]["config"] if runs else {}
    lines = [f"## {experiment.replace('_', ' ').capitalize()}", ""]
    if cfg:
        lines += [f"{cfg['dataset']}, regime {cfg['regime']}, {cfg['epochs']} epochs, {cfg['image_size']} px, "
                  f"batch {cfg['batch_size']}, {cfg['precision']} on {cfg['device']}; "
                  f"{len(runs)} run(s) in `results/{experiment}.json`.", ""]
    lines += ["| setting | n | test acc % (mean ± std) | 95% interval | best val acc % | "
              "vs best: test diff (points) | 95% interval | p |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        vs = r.get("vs_best") or {}
        note = " (best)" if name == best else ""
        if r["diverged"]:
            note += f" ({r['diverged']} diverged)"
        if r["failed"]:
            note += f" ({r['failed']} failed)"
        diff = "-" if name == best or vs.get("mean_diff") is None else f"{100 * vs['mean_diff']:+.2f}"
        p = "-" if name == best or vs.get("p_value") is None else f"{vs['p_value']:.3g}"
        lines.append(f"| {name}{note} | {r['n']} | {mean_std(r['test_acc_mean'], r['test_acc_std'])} | "
                     f"{interval(r['test_acc_ci95'])} | {mean_std(r['best_val_acc_mean'], r['best_val_acc_std'])} | "
                     f"{diff} | {'-' if name == best else interval(vs.get('ci95'))} | {p} |")
    lines.append("")
    verdict = "No setting completed."
    if best:
        others = [n for n, r in rows.items() if n != best and r["best_val_acc_mean"] is not None]
        if experiment == "consolidated" and {"baseline", "consolidated"} <= set(rows):
            verdict = compare(rows, "consolidated", "baseline")
        elif others:
            runner = max(others, key=lambda n: rows[n]["best_val_acc_mean"])
            verdict = (f"Best by validation accuracy: {best}. " + compare(rows, best, runner))
        else:
            verdict = f"Only {best} completed."
        if best_info["at_edge"]:
            verdict += " The best value lies at the edge of the swept range: widen it before calling it optimal."
    lines += [f"**Verdict.** {verdict}", ""]
    for kind in PLOTS:
        if os.path.exists(os.path.join(images_dir, f"{experiment}_{kind}.png")):
            lines.append(f"![{experiment} {kind}]({images_rel}/{experiment}_{kind}.png)")
    lines.append("")
    return lines, best, rows


def class_sections(out: str, images_rel: str) -> list:
    """Per-class accuracy and confusion matrices of the baseline and consolidated models,
    from evaluate.py's files (main_consolidated.py --evaluate), where they exist."""
    import glob
    import json
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "results", "consolidated_*_eval.json"))):
        run = os.path.basename(path)[len("consolidated_"):-len("_eval.json")]
        try:
            with open(path) as f:
                found[run] = json.load(f)
            if not isinstance(found[run]["classes"], list) or not isinstance(found[run]["per_class"], dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path} is not an evaluation file evaluate.py wrote; delete it and run "
                             f"main_consolidated.py --evaluate") from None
    if not found:
        return []
    runs = list(found)
    classes = found[runs[0]]["classes"]
    lines = ["## The consolidated model and the baseline, class by class", "",
             "Test accuracy per class of each saved model (`main_consolidated.py --evaluate`), in percent.", "",
             "| class | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for name in classes:
        cells = [found[r]["per_class"].get(name) for r in runs]
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{100 * v:.2f}" for v in cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{100 * found[r]['test_acc']:.2f}**" for r in runs) + " |")
    lines.append("")
    for run in runs:
        lines.append(f"![consolidated {run} confusion matrix]({images_rel}/consolidated_{run}_confusion.png)")
    lines.append("")
    return lines


def build_report(out: str) -> str:
    results_dir = os.path.join(out, "results")
    found = {}
    present = experiments_in(out)
    for experiment in EXPERIMENTS:
        if experiment in present:
            found[experiment] = read_results(out, experiment)
    if not found:
        raise FileNotFoundError(f"no results files in {results_dir}; run a main_*.py script first")
    images_dir = os.path.join(out, "images")
    images_rel = os.path.relpath(images_dir, results_dir)
    lines = ["# Study report", "",
             "Built by `report.py` from the results files in this folder. Accuracies are in percent; "
             "intervals are t-based 95% intervals over seeds; comparisons are paired over shared seeds "
             "(paired t-test). The best setting is chosen on validation accuracy and judged on test accuracy.", ""]
    findings = []
    for experiment, results in found.items():
        body, best, rows = section(experiment, results, images_dir, images_rel)
        lines += body
        published, claim = PUBLISHED[experiment]
        if experiment == "consolidated":
            ours = "-" if not best else compare(rows, "consolidated", "baseline") if {
                "baseline", "consolidated"} <= set(rows) else "baseline or consolidated missing"
            agree = "-"
            if {"baseline", "consolidated"} <= set(rows) and rows["consolidated"]["test_acc_mean"] is not None \
                    and rows["baseline"]["test_acc_mean"] is not None:
                agree = "yes" if rows["consolidated"]["test_acc_mean"] > rows["baseline"]["test_acc_mean"] else "no"
        else:
            ours = f"best: {best}" if best else "nothing completed"
            if best and published in rows and published != best:
                ours += "; " + compare(rows, best, published)
            agree = "-" if not best else "yes" if best == published else \
                "not swept" if published not in rows else "no"
        findings.append(f"| {experiment} | {claim} | {ours} | {agree} |")
    lines += class_sections(out, images_rel)
    lines += ["## The study's findings beside these runs", "",
              "| ablation | published finding | this run | agrees |", "|---|---|---|---|", *findings, "",
              "A finding 'agrees' when this run's best setting is the one the study declared best "
              "(for the consolidated model: when it beats the baseline). Agreement from one seed, or "
              "within the intervals above, is not evidence either way.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    root = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=root, help="root holding results/ and images/ (default: the repository root)")
    args = p.parse_args(argv)
    try:
        text = build_report(args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    path = os.path.join(args.out, "results", "REPORT.md")
    try:
        atomic_write_text(path, text)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
