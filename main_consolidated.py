"""Consolidated: does the combination of every ablation's winner beat the baseline?

Compared: the study's baseline (Adam 1e-4, ReLU, no dropout, no penalty) and
its consolidated model (Adam 1e-4, elastic net L1 = 5e-6 / L2 = 9.5e-5,
LeakyReLU, dropout 0.25), under the same regime. With --from-results the
consolidated model takes instead the best setting of each ablation from the
results files under --out.
Held fixed: batch 64, the "full" regime (45,000 / 5,000), 50 epochs (the
study gave no script or regime for this model; these are its dropout study's).
"""
import functools
import os
import sys

from core import logs
from core.ablation import Ablation, Finding, decision_order
from core.results import fmt

if __name__ == "__main__":  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
    logs.one_line_interrupts()
import report  # noqa: E402
import sweep  # noqa: E402
from core import results  # noqa: E402
from core import stats  # noqa: E402
from train import DEFAULTS  # noqa: E402

VALUES = ["baseline", "consolidated"]
MODELS = {
    "baseline": dict(optimizer="adam", lr=1e-4, l1=0.0, l2=0.0, activation="relu", dropout=0.0),
    "consolidated": dict(optimizer="adam", lr=1e-4, l1=5e-6, l2=9.5e-5, activation="leakyrelu", dropout=0.25),
}


def make_run(value: str, models: dict = MODELS):
    if value not in models:
        raise ValueError(f"unknown model {value!r}; choose from {', '.join(models)}")
    return value, dict(models[value])


def deciding() -> list:
    """The ablations whose best settings --from-results takes (those that decide something, as
    the main_*.py scripts declare them), in the order it takes them."""
    return decision_order(report.study())


def sweep_states(out: str) -> dict:
    """ablation -> (its results, results.progress) for each ablation with results or a plan under out."""
    present = results.experiments_in(out)
    found = {}
    for ablation in (declared.name for declared in deciding()):
        if ablation in present or os.path.exists(results.plan_path(out, ablation)):
            found[ablation] = results.read_with_progress(out, ablation)
    return found


def unfinished_sentence(found: dict) -> str | None:
    """One sentence naming each unfinished sweep, how many runs it lacks and which; None if none."""
    parts = []
    for ablation, res in found.items():
        prog = res["progress"]
        if prog["pending"]:
            shown = results.listed(prog["pending"], 3)
            failed = f", {len(prog['failed'])} failed" if prog["failed"] else ""
            parts.append(f"{ablation} has {prog['finished']} of {prog['planned']} runs finished "
                         f"({len(prog['pending'])} missing{failed}: {shown})")
    if not parts:
        return None
    return ("--from-results: unfinished sweeps: " + "; ".join(parts) + ". Finish them (run the same "
            "main_<ablation>.py command again; pending runs that no command asks for any more, left by a sweep "
            "stopped and rerun with fewer --values or seeds, are dropped by adding --forget-pending to the command "
            "whose runs are finished) or pass --allow-partial to use the runs recorded so far")


def models_from_results(out: str, allow_partial: bool = False) -> dict:
    """The consolidated model from each ablation's best setting (by mean validation
    accuracy) in out/results; an ablation without results keeps the study's choice.
    A best setting that holds only under another setting (the learning-rate study's lr,
    found with Adam) applies only where the consolidated model has that setting.
    An unfinished sweep (runs planned but not recorded) is refused unless allow_partial."""
    chosen = dict(MODELS["consolidated"])
    found = sweep_states(out)
    tuned_rates = {}
    problem = unfinished_sentence(found)
    if problem and not allow_partial:
        raise ValueError(problem)
    for declared in deciding():
        take_best(declared, out, found, chosen, tuned_rates)
    take_tuned_rate(chosen, tuned_rates)
    return {"baseline": MODELS["baseline"], "consolidated": chosen}


def values_of(chosen: dict, keys: tuple) -> str:
    """'lr=0.0001, l1=0': the model's value of each key (the study's default where the model names none)."""
    held = {**DEFAULTS, **ABLATION.settings, **chosen}
    return ", ".join(f"{k}={fmt(held[k])}" for k in keys)


def take_best(declared, out: str, found: dict, chosen: dict, tuned_rates: dict) -> None:
    """Set in chosen what the ablation (its declaration) decides, from its best setting in found,
    saying what it took; a tuned sweep's rate for a winner that does not decide lr goes to tuned_rates."""
    ablation, keys = declared.name, declared.decides
    path = results.results_path(out, ablation)
    summary, best = stats.summarize(found[ablation]) if ablation in found else (None, None)
    if not best:
        print(f"--from-results: no completed {ablation} results in {path}; keeping the study's "
              + values_of(chosen, keys))
        return
    row = next(r for r in summary if r["setting"] == best["setting"])
    needs = declared.requires
    if needs and chosen.get(needs.key) != needs.value:
        print(f"--from-results: {ablation} best {best['setting']} is for {needs.words}, not {chosen.get(needs.key)}; "
              f"ignored")
        return
    chosen.update({k: row["params"][k] for k in keys if k in row["params"]})
    tuned = ""
    if row.get("lr") is not None:  # a tuned sweep (--tune-lr): its winner at its own chosen rate
        tuned = f" at its chosen lr {fmt(row['lr'])}"
        if "lr" in keys:
            chosen["lr"] = row["lr"]
        else:
            optimizer = next(r["config"]["optimizer"] for r in found[ablation]["runs"]
                             if stats.setting_of(r) == best["setting"] and "config" in r)
            tuned_rates[ablation] = (row["lr"], optimizer)
    ranked = sum(r["best_val_acc_mean"] is not None for r in summary)
    prog = found[ablation]["progress"]
    partial = f"; unfinished: {prog['finished']} of {prog['planned']} runs" if prog["pending"] else ""
    print(f"--from-results: {ablation} best is {best['setting']}{tuned} (of {ranked} setting(s); {row['n']} "
          f"seed(s), mean best validation accuracy {100 * row['best_val_acc_mean']:.2f}%{partial}): "
          + values_of(chosen, keys))


def take_tuned_rate(chosen: dict, tuned_rates: dict) -> None:
    """The lr of the consolidated model where tuned sweeps (--tune-lr) chose one for their winners:
    theirs where they agree and trained with the chosen optimizer; otherwise the lr chosen so far
    (the optimizer or learning-rate sweep's, or the study's), with a note."""
    usable = {a: lr for a, (lr, optimizer) in tuned_rates.items() if optimizer == chosen["optimizer"]}
    for ablation in set(tuned_rates) - set(usable):
        print(f"--from-results: {ablation}'s chosen lr is for {tuned_rates[ablation][1]}, not "
              f"{chosen['optimizer']}; ignored")
    rates = set(usable.values())
    if len(rates) == 1:
        chosen["lr"] = rates.pop()
        print(f"--from-results: lr={fmt(chosen['lr'])}, the rate the tuned sweeps ({', '.join(usable)}) "
              f"chose for their winners")
    elif rates:
        print("--from-results: the tuned sweeps chose different rates for their winners ("
              + ", ".join(f"{a} {fmt(lr)}" for a, lr in usable.items()) + f"); keeping lr="
              f"{fmt(chosen['lr'])}. Each rate was best for one change alone; pass --tune-lr (e.g. x0.3 "
              f"x1 x3) to choose the combination's own")


def add_flags(parser):
    parser.add_argument("--from-results", action="store_true",
                        help="build the consolidated model from each ablation's best setting in --out's "
                             "results files instead of the study's published choices; refused while a sweep "
                             "there is unfinished")
    parser.add_argument("--allow-partial", action="store_true",
                        help="with --from-results: use unfinished sweeps' recorded runs too")
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate the saved baseline and consolidated models (evaluate.py) without training")


def chosen_runs(out: str, names: list) -> list:
    """The run name of each model to evaluate: itself, or after --tune-lr the run at its chosen rate."""
    if ABLATION.name not in results.experiments_in(out):
        return list(names)
    found = results.read_results(out, ABLATION.name)
    if not stats.is_tuned(found):
        return list(names)
    table = stats.tuning(found)
    at_rate = {(stats.setting_of(r), stats.lr_of(r)): r["name"] for r in found["runs"]}
    return [at_rate.get((n, table[n]["chosen_lr"]), n) if n in table else n for n in names]


def no_weights(out: str, name: str, seed: int, path: str) -> str:
    """One sentence for a model without weights to evaluate: not trained yet, or trained but
    without checkpoints (--save none, or removed since), which the same command would not retrain."""
    found = results.read_results(out, ABLATION.name) if ABLATION.name in results.experiments_in(out) else {"runs": []}
    run = next((r for r in found["runs"] if (r["name"], r["seed"]) == (name, seed)), None)
    if run is None or run["status"] not in ("completed", "diverged"):
        return (f"{path} does not exist: that model is not trained yet; run main_consolidated.py with the same "
                f"flags first")
    record = results.record_path(out, ABLATION.name, name, seed)
    where = record if os.path.exists(record) else results.results_path(out, ABLATION.name)
    how = "it kept no weights (--save none)" if run["config"].get("save") == "none" else \
        "its checkpoints were removed since"
    return (f"{path} does not exist: {name} finished training (recorded in {where}), but {how}; to evaluate it, "
            f"train it again with the same flags plus --values {stats.setting_of(run)} --save both --fresh")


def evaluate_saved(args) -> int:
    """evaluate.py on each saved model of this sweep under --out; 1 if one has no weights."""
    import evaluate
    names = chosen_runs(args.out, args.values or VALUES)
    first = args.seed if args.seed is not None else 0
    runs = [(n, first + k, n if args.seeds == 1 else f"{n}_seed{first + k}") for n in names for k in range(args.seeds)]
    paths = []
    for _, _, stem in runs:  # the last epoch's weights, or the best epoch's where only those were kept (--save best)
        last, best = (os.path.join(args.out, "models", ABLATION.name, f"{stem}{end}") for end in (".pt", ".best.pt"))
        paths.append(best if not os.path.exists(last) and os.path.exists(best) else last)
    for (name, seed, _), path in zip(runs, paths):
        if not os.path.exists(path):
            logs.problem(f"error: {no_weights(args.out, name, seed, path)}")
            return 1
    for path in paths:
        code = evaluate.main([path, "--out", args.out, *(["--data-dir", args.data_dir] if args.data_dir else []),
                              *(["--device", args.device] if args.device else [])])
        if code:
            return code
    return 0


def prepare(args):
    if args.evaluate:
        raise SystemExit(evaluate_saved(args))
    if args.allow_partial and not args.from_results:
        raise ValueError("argument --allow-partial: applies only with --from-results")
    if args.from_results:
        models = models_from_results(args.out, args.allow_partial)
        return functools.partial(make_run, models=models)
    return None


ABLATION = Ablation(
    name="consolidated", title="Consolidated model", order=100, doc=__doc__,  # after every ablation
    values=VALUES, values_help="models to train (baseline, consolidated)", make_run=make_run,
    settings=dict(regime="full", epochs=50),
    finding=Finding("consolidated", "the consolidated model (Adam 1e-4, elastic net, LeakyReLU, dropout 0.25) "
                                    "is the final, improved model"),
    add_flags=add_flags, prepare=prepare,
)


def main(argv=None) -> int:
    return sweep.main(ABLATION, argv)


if __name__ == "__main__":
    sys.exit(main())
