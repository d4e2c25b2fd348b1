"""The closing lines of a sweep: the table of its runs, --tune-lr's table of rates, the best
setting (and whether it lies at the edge of the range), and where its files are."""
import os

from core import logs
from core.results import fmt, results_path, table


def show_results(results: dict, wanted: set, shard, out: str, experiment: str, models_dir: str) -> None:
    """The table of the recorded runs of wanted, {(name, seed)} (of this --shard, or the
    sweep), the tuning table, the best setting, and where the files are."""
    shown = [r for r in results["runs"] if (r["name"], r["seed"]) in wanted]
    logs.info("\n" + table(shown))
    missing = len(wanted) - len(shown)
    if missing:
        logs.info(f"\n{missing} run(s) of this {'shard' if shard else 'sweep'} are not recorded yet "
                  "(another process is training them); rerun or run plotting.py once they finish")
    best = results.get("best")
    if results.get("tuning"):
        logs.info("\n" + tuning_table(results))
    if best:
        logs.info(f"\nbest by mean validation accuracy: {best['setting']}"
                  + (f" (each setting at its own best rate; at the fixed rates: {results['fixed']['best']['setting']})"
                     if results.get("tuning") and results["fixed"]["best"] else ""))
        if best["at_edge"]:
            logs.info("it lies at the edge of the swept range: widen the range (--values) before calling it optimal")
    logs.info(f"\nresults: {results_path(out, experiment)}  checkpoints: {models_dir}  "
              f"plots: {os.path.join(out, 'images', experiment)}_*.png")


def tuning_table(results: dict) -> str:
    """--tune-lr: each setting's mean best validation accuracy at every rate, its chosen rate marked *."""
    lines = ["learning rate tuning: mean best validation accuracy over seeds, * the chosen rate (on validation)"]
    for setting, t in results["tuning"].items():
        cells = [f"{fmt(r['lr'])}{'*' if r['lr'] == t['chosen_lr'] else ''} "
                 + ("-" if r["best_val_acc_mean"] is None else f"{100 * r['best_val_acc_mean']:.2f}%")
                 for r in t["rates"]]
        edge = "  (at the edge of the grid: widen the grid)" if t["at_edge"] else ""
        lines.append(f"  {setting}: " + ", ".join(cells) + edge)
    return "\n".join(lines)
