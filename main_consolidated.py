"""Consolidated: does the combination of every ablation's winner beat the baseline?

Compared: the study's baseline (Adam 1e-4, ReLU, no dropout, no penalty) and
its consolidated model (Adam 1e-4, elastic net L1 = 5e-6 / L2 = 9.5e-5,
LeakyReLU, dropout 0.25), under the same regime. With --from-results the
consolidated model takes instead the best setting of each ablation from the
results files under --out.
Held fixed: batch 64, the "full" regime (45,000 / 5,000), 50 epochs (the
study gave no script or regime for this model; these are its dropout study's).
"""
import os
import sys

import results
import stats
import sweep

EXPERIMENT = "consolidated"
VALUES = ["baseline", "consolidated"]
SETTINGS = dict(regime="full", epochs=50)
MODELS = {
    "baseline": dict(optimizer="adam", lr=1e-4, l1=0.0, l2=0.0, activation="relu", dropout=0.0),
    "consolidated": dict(optimizer="adam", lr=1e-4, l1=5e-6, l2=9.5e-5, activation="leakyrelu", dropout=0.25),
}
# which hyperparameters each ablation decides
DECIDES = {"optimizer": ("optimizer", "lr"), "learning_rate": ("lr",), "weight_regularization": ("l1", "l2"),
           "activation": ("activation",), "dropout": ("dropout",)}


def make_run(value: str, models: dict = MODELS):
    if value not in models:
        raise ValueError(f"unknown model {value!r}; choose from {', '.join(models)}")
    return value, dict(models[value])


def models_from_results(out: str) -> dict:
    """The consolidated model from each ablation's best setting (by mean validation
    accuracy) in out/results; an ablation without results keeps the study's choice.
    The learning-rate study's best lr applies only when Adam is the chosen optimizer."""
    chosen = dict(MODELS["consolidated"])
    for ablation, keys in DECIDES.items():
        path = results.results_path(out, ablation)
        best = None
        if ablation in results.experiments_in(out):
            summary, best = stats.summarize(results.read_results(out, ablation))
        if not best:
            print(f"--from-results: no completed {ablation} results in {path}; keeping the study's "
                  + ", ".join(f"{k}={sweep.fmt(chosen[k])}" for k in keys))
            continue
        params = next(r["params"] for r in summary if r["setting"] == best["setting"])
        if ablation == "learning_rate" and chosen["optimizer"] != "adam":
            print(f"--from-results: {ablation} best {best['setting']} is for Adam, not {chosen['optimizer']}; ignored")
            continue
        chosen.update({k: params[k] for k in keys if k in params})
        print(f"--from-results: {ablation} best is {best['setting']}: "
              + ", ".join(f"{k}={sweep.fmt(chosen[k])}" for k in keys))
    return {"baseline": MODELS["baseline"], "consolidated": chosen}


def add_flags(parser):
    parser.add_argument("--from-results", action="store_true",
                        help="build the consolidated model from each ablation's best setting in --out's "
                             "results files instead of the study's published choices")
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate the saved baseline and consolidated models (evaluate.py) without training")


def evaluate_saved(args) -> int:
    """evaluate.py on each saved model of this sweep under --out; 1 if one is not trained yet."""
    import evaluate
    import logs
    names = args.values or VALUES
    first = args.seed if args.seed is not None else 0
    stems = [n if args.seeds == 1 else f"{n}_seed{first + k}" for n in names for k in range(args.seeds)]
    paths = []
    for stem in stems:  # the last epoch's weights, or the best epoch's where only those were kept (--save best)
        last, best = (os.path.join(args.out, "models", EXPERIMENT, f"{stem}{end}") for end in (".pt", ".best.pt"))
        paths.append(best if not os.path.exists(last) and os.path.exists(best) else last)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        logs.problem(f"error: {missing[0]} does not exist: that model is not trained yet; run "
                     f"main_consolidated.py with the same flags first")
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
    if args.from_results:
        models = models_from_results(args.out)
        return lambda value: make_run(value, models)
    return None


def main(argv=None) -> int:
    return sweep.main(EXPERIMENT, __doc__, VALUES, make_run, SETTINGS, "models to train (baseline, consolidated)",
                      argv, add_flags=add_flags, prepare=prepare)


if __name__ == "__main__":
    sys.exit(main())
