"""What a sweep says: its opening lines (what it trains, on what, how, and which runs are
already finished), and its closing lines (the table of its runs, --tune-lr's table of rates,
the best setting and whether it lies at the edge of the range, and where its files are)."""
import os

from core import logs
from core.context import Context
from core.results import fmt, record_path, results_path, table


def log_start(ctx: Context, dataset, split, indices: tuple, done: list) -> None:
    """What the sweep trains, on what, how; then each of its runs already finished."""
    args, base = ctx.args, ctx.base
    how = (f", {ctx.world} processes, " + ("each run data-parallel over all" if ctx.ddp else "runs spread over them")
           if ctx.world > 1 else "") + (f", shard {args.shard[0]}/{args.shard[1]}" if args.shard else "")
    settings = (f"{len(ctx.order) // len(args.tune_lr)} settings x {len(args.tune_lr)} learning rates (--tune-lr)"
                if ctx.tunes else f"{len(ctx.order)} settings")
    logs.info(f"{ctx.experiment}: {settings} x {args.seeds} seed(s) on {dataset.name} from {dataset.source}: "
              f"{len(indices[0])} train / {len(indices[1])} val / {len(split.test.indices)} test images at "
              f"{base['image_size']} px, {base['epochs']} epochs, {ctx.device}, {base['precision']}{how}")
    for job, old in done:  # named where it is: the merged file may be missing (a full disk when it was written)
        where = record_path(args.out, ctx.experiment, job.name, job.config["seed"])
        logs.info(f"{job.desc}: already {old['status']} in "
                  f"{where if os.path.exists(where) else results_path(args.out, ctx.experiment)}; skipping "
                  f"(--fresh retrains it)")


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
