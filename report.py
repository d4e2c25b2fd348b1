"""Build <out>/results/REPORT.md from the results files present; never retrains.

    python report.py                 # results/ under the repository root
    python report.py --out runs

One section per ablation: a table over seeds (mean ± std, 95% interval, n), a
paired comparison of every setting with the best one, the plots, and a verdict
that states its uncertainty; the consolidated model against the baseline; and
the study's published findings beside what these runs found.

The ablations, their order, titles and the study's findings are what the main_*.py
scripts beside this file declare (study()); a new script is a new section.
"""
import argparse
import importlib
import os
import sys

from core import ablation
from core import stats
from core.results import NEUTRAL_KEYS, experiments_in, fmt, listed, read_with_progress
from core.storage import WriteError, atomic_write_text, out_folder

ROOT = os.path.dirname(os.path.abspath(__file__))
PLOTS = ("loss", "train_acc", "val_acc", "test_acc", "hparam", "isolation")


def study() -> list:
    """The ablations (core.ablation.Ablation) that the main_*.py scripts beside this file declare,
    in the study's order."""
    return ablation.in_report_order(importlib.import_module(name).ABLATION
                                    for name in ablation.script_modules(ROOT))


def pts(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def interval(ci) -> str:
    return "-" if ci is None else f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def mean_std(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


TIE = 0.005  # test-accuracy points below which two means print alike (0.00): a tie


def compare(rows: dict, a: str, b: str) -> str:
    """One sentence: how far setting a's test accuracy lies from b's, with its uncertainty."""
    ra, rb = rows[a], rows[b]
    if ra["test_acc_mean"] is None or rb["test_acc_mean"] is None:
        return f"{a} or {b} has no completed run to compare."
    diff = 100 * (ra["test_acc_mean"] - rb["test_acc_mean"])
    if abs(diff) < TIE:
        return (f"{a} and {b} tie on test accuracy at {100 * rb['test_acc_mean']:.2f}% "
                f"(n = {ra['n']} and {rb['n']} seed(s)).")
    lead = "leads" if diff >= 0 else "trails"
    # the paired comparison is stored against the best setting: use whichever side holds it
    paired = ra["vs_best"] if rb.get("is_best") else rb["vs_best"] if ra.get("is_best") else None
    if paired and paired["ci95"] is not None and paired["p_value"] is not None:
        half = 100 * (paired["ci95"][1] - paired["ci95"][0]) / 2
        # said in words: with 3 seeds most intervals are wide, and a reader of the numbers alone
        # takes any lead for a finding
        apart = " The interval excludes 0." if paired["ci95"][0] > 0 or paired["ci95"][1] < 0 else \
            " The interval includes 0: these seeds do not tell the two apart."
        return (f"{a} {lead} {b} by {abs(diff):.2f} ± {half:.2f} test-accuracy points "
                f"(95% interval of the paired difference), p = {paired['p_value']:.3g}, n = {paired['n']}."
                + apart)
    n = min(ra["n"], rb["n"])
    return (f"{a} {lead} {b} by {abs(diff):.2f} test-accuracy points from n = {n} seed(s) each, "
            f"too few to tell that from seed-to-seed noise (rerun with --seeds 3 or more).")


OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD", "adagrad": "Adagrad"}
CAPS = (("train_size", "--train-size"), ("val_size", "--val-size"), ("test_size", "--test-size"))
PER_RUN = ("seed",) + NEUTRAL_KEYS  # config keys that may differ between the runs of one sweep


def describe_model(config: dict) -> str:
    """A model as trained, from its run's config: 'Adam lr 0.0001, leakyrelu, dropout 0.25, L1 5e-06, L2 9.5e-05'."""
    c = config
    penalty = "no weight penalty" if not c.get("l1") and not c.get("l2") else \
        f"L1 {fmt(c.get('l1', 0.0))}, L2 {fmt(c.get('l2', 0.0))}"
    return (f"{OPTIMIZER_NAMES.get(c.get('optimizer'), c.get('optimizer'))} lr {fmt(c.get('lr'))}, "
            f"{c.get('activation')}, dropout {fmt(c.get('dropout'))}, {penalty}")


def images_used(runs: list, cfg: dict) -> str:
    """'1,000 train / 250 val / 1,000 test images (capped: --train-size 1000, ...)' from the runs' records."""
    sizes = {tuple(r["images"].get(k) for k in ("train", "val", "test")) for r in runs
             if isinstance(r.get("images"), dict)}
    caps = [f"{flag} {cfg[key]}" for key, flag in CAPS if cfg.get(key) is not None]
    if len(sizes) == 1:
        train, val, test = next(iter(sizes))
        text = f"{train:,} train / {val:,} val / {test:,} test images"
    else:  # records written before the counts were kept, or runs on different data
        text = f"the {cfg.get('regime')} regime's images"
    return text + (f" (capped: {', '.join(caps)})" if caps else "")


def mixed_settings(runs: list) -> list:
    """'key (a, b)' for each shared setting (not the swept ones) in which the recorded runs differ."""
    swept = {k for r in runs for k in r["params"]}
    values = {}
    for run in runs:
        for key, value in run.get("config", {}).items():
            if key not in swept and key not in PER_RUN:
                values.setdefault(key, set()).add(fmt(value))
    return [f"{k} ({', '.join(sorted(v))})" for k, v in values.items() if len(v) > 1]


# how to get out of an unfinished sweep, also where the runs pending are ones no command will train again
FINISH_ADVICE = ("Run the sweep's command again to finish it; pending runs that no command asks for any more (a "
                 "sweep stopped, then rerun with fewer --values or seeds) are dropped from the plan by adding "
                 "--forget-pending to the command whose runs are finished.")


def pending_text(prog: dict) -> str:
    return f"not finished ({prog['finished']} of {prog['planned']} runs); pending: {listed(prog['pending'], 6)}"


def ranking(rows) -> list:
    """Setting names by mean best validation accuracy, best first (those with a completed run)."""
    ranked = [r for r in rows if r["best_val_acc_mean"] is not None]
    return [r["setting"] for r in sorted(ranked, key=lambda r: -r["best_val_acc_mean"])]


def tuning_lines(results: dict, rows: dict) -> list:
    """A tuned sweep (--tune-lr): each setting's rates, its chosen one, the setting at its own
    fixed rate beside it after tuning, and the two rankings side by side."""
    table = stats.tuning(results)
    fixed_rows, _ = stats.summarize(stats.at_rates(results, "own"))
    fixed = {r["setting"]: r for r in fixed_rows}
    lines = ["**Learning rate tuned** (`--tune-lr`): every setting trained at each rate below; the table above "
             "shows each at its chosen rate, the one with the best mean validation accuracy (test accuracy "
             "plays no part in the choice).", "",
             "| setting | mean best val acc % at each rate | chosen lr | at its own fixed lr: val / test % | "
             "after tuning: val / test % |", "|---|---|---|---|---|"]
    for setting, t in table.items():
        rates = ", ".join(f"{fmt(r['lr'])}: {pts(r['best_val_acc_mean'])}" for r in t["rates"])
        chosen = "-" if t["chosen_lr"] is None else fmt(t["chosen_lr"]) + (" (edge of the grid: widen it)"
                                                                            if t["at_edge"] else "")
        own = fixed.get(setting)
        at_own = "not in the grid" if own is None else f"{pts(own['best_val_acc_mean'])} / {pts(own['test_acc_mean'])}"
        r = rows.get(setting, {})
        lines.append(f"| {setting} | {rates} | {chosen} | {at_own} | "
                     f"{pts(r.get('best_val_acc_mean'))} / {pts(r.get('test_acc_mean'))} |")
    before, after = ranking(fixed_rows), ranking(rows.values())
    lines += ["", f"Ranking at the fixed rates: {', '.join(before) or '-'}. "
                  f"Ranking after tuning: {', '.join(after) or '-'}."]
    if before and after:
        lines[-1] += (f" The winner changed: {before[0]} at the fixed rates, {after[0]} after tuning."
                      if before[0] != after[0] else f" The winner is the same: {after[0]}.")
        if len(before) != len(after):
            lines[-1] += " (Only settings whose own rate was in the grid rank at the fixed rates.)"
    return lines + [""]


def section(experiment: str, title: str, results: dict, images_dir: str, images_rel: str) -> tuple:
    summary, best_info = stats.summarize(results)  # recomputed from the runs, not taken from the file
    rows = {r["setting"]: r for r in summary}
    best = best_info and best_info["setting"]
    runs = results["runs"]
    cfg = runs[0]["config"] if runs and isinstance(runs[0].get("config"), dict) else {}
    lines = [f"## {title}", ""]
    if cfg:
        lines += [f"{cfg['dataset']}, regime {cfg['regime']}: {images_used(runs, cfg)}; {cfg['epochs']} epochs, "
                  f"{cfg['image_size']} px, batch {cfg['batch_size']}, {cfg['precision']} on {cfg['device']}; "
                  f"{len(runs)} run(s) in `results/{experiment}.json`.", ""]
    mixed = mixed_settings(runs)
    if mixed:
        lines += [f"**Mixed settings.** These runs were not all trained alike: {'; '.join(mixed)}. The line "
                  f"above describes the first; rerun the others with the same flags (and --fresh) to compare "
                  f"like with like.", ""]
    prog = results.get("progress")
    if prog and prog["pending"]:
        lines += [f"**{pending_text(prog).capitalize()}.** The table and verdict use the runs recorded so far. "
                  f"{FINISH_ADVICE}", ""]
    if experiment == "consolidated":
        configs = {run["name"]: run.get("config") or run["params"] for run in runs}
        lines += ["Models as trained: " + "; ".join(f"{name}: {describe_model(configs[name])}" for name in rows)
                  + ".", ""]
    tied = [n for n, r in rows.items() if best and n != best and r["best_val_acc_mean"] is not None
            and abs(r["best_val_acc_mean"] - rows[best]["best_val_acc_mean"]) < TIE / 100]
    lines += settings_table(rows, best, tied)
    if stats.is_tuned(results):
        lines += tuning_lines(results, rows)
    lines += [f"**Verdict.** {verdict(experiment, rows, best_info, tied)}", ""]
    for kind in PLOTS:
        if os.path.exists(os.path.join(images_dir, f"{experiment}_{kind}.png")):
            lines.append(f"![{experiment} {kind}]({images_rel}/{experiment}_{kind}.png)")
    lines.append("")
    return lines, best, rows


def settings_table(rows: dict, best, tied: list) -> list:
    """A section's table: each setting's test accuracy over seeds and its paired difference from the best."""
    lines = ["| setting | n | test acc % (mean ± std) | 95% interval | best val acc % | "
             "vs best: test diff (points) | 95% interval | p |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        vs = r.get("vs_best") or {}
        note = "" if name != best else f" (best; tied on validation with {', '.join(tied)})" if tied else " (best)"
        if r["diverged"]:
            note += f" ({r['diverged']} diverged)"
        if r["failed"]:
            note += f" ({r['failed']} failed)"
        diff = "-" if name == best or vs.get("mean_diff") is None else f"{100 * vs['mean_diff']:+.2f}"
        p = "-" if name == best or vs.get("p_value") is None else f"{vs['p_value']:.3g}"
        lines.append(f"| {name}{note} | {r['n']} | {mean_std(r['test_acc_mean'], r['test_acc_std'])} | "
                     f"{interval(r['test_acc_ci95'])} | {mean_std(r['best_val_acc_mean'], r['best_val_acc_std'])} | "
                     f"{diff} | {'-' if name == best else interval(vs.get('ci95'))} | {p} |")
    return lines + [""]


def told_apart(row: dict) -> bool:
    """Whether a setting's paired difference from the best setting has an interval excluding 0;
    without one (a single seed, or no paired seeds) nothing is told apart."""
    ci = (row.get("vs_best") or {}).get("ci95")
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def verdict(experiment: str, rows: dict, best_info, tied: list) -> str:
    """A section's verdict: the best setting against the runner-up (the consolidated model against
    the baseline), with its uncertainty."""
    if not best_info:
        return "No setting completed."
    best = best_info["setting"]
    others = [n for n, r in rows.items() if n != best and r["best_val_acc_mean"] is not None]
    if experiment == "consolidated" and {"baseline", "consolidated"} <= set(rows):
        text = compare(rows, "consolidated", "baseline")
    elif others:
        runner = max(others, key=lambda n: rows[n]["best_val_acc_mean"])
        lead = f"Best by validation accuracy: {best}" + (f", tied with {', '.join(tied)}" if tied else "")
        text = f"{lead}. " + compare(rows, best, runner)
    else:
        text = f"Only {best} completed."
    if best_info["at_edge"]:
        text += " The best value lies at the edge of the swept range: widen it before calling it optimal."
    return text


def class_sections(out: str, images_rel: str, runs: list) -> list:
    """Per-class accuracy and confusion matrices of the baseline and consolidated models,
    from evaluate.py's files (main_consolidated.py --evaluate), where they exist and were
    made from the weights the consolidated sweep's records (runs) now name; others are stale."""
    import glob
    import json
    found, stale = {}, []
    current = {(r["name"], r["seed"]): r.get("run_id") for r in runs}
    for path in sorted(glob.glob(os.path.join(out, "results", "consolidated_*_eval.json"))):
        run = os.path.basename(path)[len("consolidated_"):-len("_eval.json")]
        try:
            with open(path) as f:
                data = json.load(f)
            if not isinstance(data["classes"], list) or not isinstance(data["per_class"], dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path} is not an evaluation file evaluate.py wrote; delete it and run "
                             f"main_consolidated.py --evaluate") from None
        if data.get("run_id") is None or current.get((data.get("name"), data.get("seed"))) != data["run_id"]:
            stale.append(os.path.basename(path))
        else:
            found[run] = data
    lines = []
    if found:
        runs = list(found)
        classes = found[runs[0]]["classes"]
        lines += ["## The consolidated model and the baseline, class by class", "",
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
    if stale:
        lines += [f"Not shown: {', '.join(f'`results/{name}`' for name in stale)}, evaluation(s) of weights that "
                  f"are not the recorded runs' (retrained since, or written before evaluations named their "
                  f"run); run `main_consolidated.py --evaluate` with the training's flags to redo them.", ""]
    return lines


def finding(declared, results: dict, best, rows: dict) -> str:
    """The findings table's row of an ablation (its declaration): the published claim, what these
    runs found, and whether they agree."""
    experiment = declared.name
    published, published_params = declared.published_run() or (None, {})
    claim = declared.finding.claim if declared.finding else "-"
    prog = results["progress"]
    if experiment == "consolidated":
        both = {"baseline", "consolidated"} <= set(rows)
        ours = "-" if not best else compare(rows, "consolidated", "baseline") if both \
            else "baseline or consolidated missing"
        agree = "-"
        if both and rows["consolidated"]["test_acc_mean"] is not None and rows["baseline"]["test_acc_mean"] is not None:
            diff = 100 * (rows["consolidated"]["test_acc_mean"] - rows["baseline"]["test_acc_mean"])
            agree = "no (a tie)" if abs(diff) < TIE else "yes" if diff > 0 else "no"
        config = next((r.get("config") for r in results["runs"] if r["name"] == "consolidated"), None)
        if config and any(config.get(k) != v for k, v in published_params.items()):
            ours = f"this run's consolidated model is not the study's ({describe_model(config)}); " + ours
    else:
        ours = f"best: {best}" if best else "nothing completed"
        if best and published in rows and published != best:
            ours += "; " + compare(rows, best, published)
        agree = "-" if not best or published is None else "yes" if best == published else \
            "not swept" if published not in rows else "no" if told_apart(rows[published]) else \
            "no (not told apart)"
    if prog["pending"]:
        ours = f"{pending_text(prog)}; so far " + ours
        agree = "-"
    return f"| {experiment} | {claim} | {ours} | {agree} |"


def build_report(out: str) -> str:
    results_dir = os.path.join(out, "results")
    present = experiments_in(out)
    declared = {a.name: a for a in study()}
    found = {name: read_with_progress(out, name) for name in declared if name in present}
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
        body, best, rows = section(experiment, declared[experiment].title, results, images_dir, images_rel)
        lines += body
        findings.append(finding(declared[experiment], results, best, rows))
    lines += class_sections(out, images_rel, found.get("consolidated", {}).get("runs", []))
    lines += ["## The study's findings beside these runs", "",
              "| ablation | published finding | this run | agrees |", "|---|---|---|---|", *findings, "",
              "A finding 'agrees' when this run's best setting is the one the study declared best "
              "(for the consolidated model: when it beats the baseline); 'no (not told apart)' where the "
              "study's pick lost, but its paired interval against the best includes 0. Agreement from "
              "one seed, or within the intervals above, is not evidence either way.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=ROOT, type=out_folder,
                   help="root holding results/ and images/ (default: the repository root)")
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
