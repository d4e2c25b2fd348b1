"""What every main_<ablation>.py shares: the command line, the sweep over its
settings, results files, checkpoints, plots and the final table.

A script gives its experiment name, its swept values as strings, a function
turning one value into (run name, config changes), and the settings in which
it differs from train.DEFAULTS (regime, epochs). Everything else is here.
"""
import argparse
import csv
import io
import json
import math
import os
import sys

from data import DATASETS, REGIMES
from train import DEFAULTS, OPTIMIZERS, PRECISIONS, TRAIN_ACC_MODES

ROOT = os.path.dirname(os.path.abspath(__file__))
QUICK = dict(image_size=67, train_size=1000, val_size=250, test_size=1000, epochs=5)


class OneLineParser(argparse.ArgumentParser):
    """Bad input ends the program with exit code 2 and one line, before any work."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def whole_number(text: str, low: int = 1, high: int | None = None) -> int:
    """An integer in [low, high]; argparse reports the ArgumentTypeError as one line."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {low}" if high is None
                                         else f"{text!r} must lie between {low} and {high}")
    return value


def positive_int(text):
    return whole_number(text, 1)


def seed(text):
    return whole_number(text, 0, 2**31 - 1)  # numpy refuses negative seeds


def image_size(text):
    from alexnet import MIN_IMAGE_SIZE
    value = positive_int(text)
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is below {MIN_IMAGE_SIZE}, the smallest input AlexNet accepts")
    return value


def parse_number(text: str, what: str = "value", allow_zero: bool = False) -> float:
    """A finite number above zero (or at least zero); ValueError with one clear sentence otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} {text!r} must be {'zero or ' if allow_zero else ''}a positive number")
    return value


def fmt(value) -> str:
    """Compact text for a hyperparameter value in names and tables: 1e-05, 0.25, adam."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_parser(experiment: str, doc: str, values: list, settings: dict, values_help: str):
    defaults = {**DEFAULTS, **settings}
    p = OneLineParser(prog=f"main_{experiment}.py", description=doc,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    d = lambda key: f"(default: {defaults[key]})"
    p.add_argument("--values", nargs="+", metavar="V", help=f"{values_help} (default: {' '.join(values)})")
    p.add_argument("--dataset", choices=DATASETS,
                   help=f"dataset {d('dataset')}")
    p.add_argument("--data-dir", help=f"where the dataset lives or is downloaded to {d('data_dir')}")
    p.add_argument("--regime", choices=REGIMES,
                   help=f"subset: 9,000/1,000 of a fixed fifth; full: 45,000/5,000 {d('regime')}")
    p.add_argument("--epochs", type=positive_int, help=f"epochs per run {d('epochs')}")
    p.add_argument("--batch-size", type=positive_int, help=f"training batch size {d('batch_size')}")
    p.add_argument("--train-size", type=positive_int, help="cap on training images (default: the regime's)")
    p.add_argument("--val-size", type=positive_int, help="cap on validation images (default: the regime's)")
    p.add_argument("--test-size", type=positive_int, help="cap on test images (default: all)")
    p.add_argument("--image-size", type=image_size, help=f"input side in pixels, at least 67 {d('image_size')}")
    p.add_argument("--seed", type=seed, help=f"seed of initialisation, data order and flips {d('seed')}")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="repeat every setting with seeds seed, seed+1, ... (default: 1)")
    p.add_argument("--device", help=f"auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps {d('device')}")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"auto: bf16 autocast where the device runs it natively, else fp32 {d('precision')}")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (default: off)")
    p.add_argument("--train-acc", choices=TRAIN_ACC_MODES,
                   help="epoch: counted on the training batches as they pass (augmented, dropout on); "
                        f"eval: a second pass in eval mode {d('train_acc')}")
    p.add_argument("--checkpoint-every", type=positive_int,
                   help=f"epochs between resume checkpoints {d('checkpoint_every')}")
    p.add_argument("--out", default=ROOT,
                   help="root for models/, images/ and results/ (default: the repository root)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that are already complete")
    p.add_argument("--quick", action="store_true",
                   help="small preset for a whole sweep in minutes on 2 CPU cores: "
                        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                        + " (explicit flags win)")
    return p


def resolve_config(args, settings: dict) -> dict:
    """Explicit flags, then --quick, then the script's settings, then train.DEFAULTS."""
    config = {**DEFAULTS, **settings}
    if args.quick:
        config.update(QUICK)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    return config


# ---------------------------------------------------------------------------
# Results files

def results_path(out: str, experiment: str) -> str:
    return os.path.join(out, "results", f"{experiment}.json")


def read_results(out: str, experiment: str) -> dict:
    """The experiment's results file (an empty one if there is none yet); ValueError
    with one sentence if the file is not one that write_results wrote."""
    path = results_path(out, experiment)
    if not os.path.exists(path):
        return {"experiment": experiment, "runs": []}
    problem = None
    try:
        with open(path) as f:
            results = json.load(f)
    except ValueError as err:
        problem = str(err)
    else:
        runs = results.get("runs") if isinstance(results, dict) else None
        if not isinstance(runs, list) or not all(isinstance(r, dict) and {"name", "seed", "status"} <= r.keys()
                                                 for r in runs):
            problem = "it holds no list of runs"
    if problem:
        raise ValueError(f"{path} is not a results file this repository wrote ({problem}); "
                         f"move it away or choose another --out")
    return results


def atomic_write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"  # a fixed name: a write killed midway leaves one stale file, replaced next time
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_safe(value):
    """NaN and infinity become null, so the file is standard JSON that loads anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(out: str, results: dict) -> None:
    """results/<experiment>.json with its summary over seeds, and a CSV of its runs."""
    import stats
    experiment = results["experiment"]
    results["summary"], results["best"] = stats.summarize(results)
    atomic_write_text(results_path(out, experiment), json.dumps(_json_safe(results), indent=1, allow_nan=False))
    buf = io.StringIO()
    param_keys = sorted({k for run in results["runs"] for k in run["params"]})
    writer = csv.writer(buf)
    writer.writerow(["name", *param_keys, "seed", "status", "epochs_completed", "final_loss",
                     "final_train_acc", "final_val_acc", "best_val_acc", "test_acc"])
    for run in results["runs"]:
        h = run["history"]
        last = lambda key: h[key][-1] if h[key] else ""
        writer.writerow([run["name"], *[run["params"].get(k, "") for k in param_keys], run["seed"],
                         run["status"], len(h["loss"]), last("loss"), last("train_acc"), last("val_acc"),
                         "" if run.get("best_val_acc") is None else run["best_val_acc"],
                         "" if run.get("test_acc") is None else run["test_acc"]])
    atomic_write_text(os.path.join(out, "results", f"{experiment}.csv"), buf.getvalue())


def print_table(runs: list) -> None:
    rows = [("run", "hyperparameters", "seed", "status", "best val acc", "test acc")]
    for run in runs:
        params = ", ".join(f"{k}={fmt(v)}" for k, v in run["params"].items())
        best = run.get("best_val_acc")
        test = run.get("test_acc")
        status = run["status"]
        if status == "diverged":
            status = f"diverged at epoch {run['epochs_completed'] + 1}"
        rows.append((run["name"], params, str(run["seed"]), status,
                     "-" if best is None else f"{100 * best:.2f}%",
                     "-" if test is None else f"{100 * test:.2f}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------------------
# The sweep

def main(experiment: str, doc: str, values: list, make_run, settings: dict, values_help: str,
         argv=None, add_flags=None, prepare=None) -> int:
    """Parse the command line, train every (setting, seed) not yet complete, and
    leave checkpoints, results, plots and a table. Returns the exit code.
    A script with flags of its own adds them with add_flags(parser); prepare(args)
    may then return the make_run to use."""
    parser = build_parser(experiment, doc, values, settings, values_help)
    if add_flags:
        add_flags(parser)
    args = parser.parse_args(argv)
    if prepare:
        try:
            make_run = prepare(args) or make_run
        except ValueError as err:
            parser.error(str(err))
    try:
        sweep = [make_run(v) for v in (args.values or values)]
    except ValueError as err:
        parser.error(f"argument --values: {err}")
    names = [name for name, _ in sweep]
    if len(set(names)) != len(names):
        parser.error("argument --values: a value is given twice")
    base = resolve_config(args, settings)
    for name, params in sweep:
        if params.get("optimizer", base["optimizer"]) not in OPTIMIZERS:
            parser.error(f"argument --values: unknown optimizer in {name!r}")
    try:
        return run_sweep(experiment, sweep, base, args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs and epochs are saved; run the same command again to resume",
              file=sys.stderr)
        return 130


def run_sweep(experiment: str, sweep: list, base: dict, args) -> int:
    import torch
    import torch.distributed as dist
    import data
    from train import resolve_device

    try:
        dataset = data.load_dataset(base["dataset"], base["data_dir"], base["image_size"])
    except data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # under torchrun: one process per device, DistributedDataParallel inside each run
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        device = resolve_device(base["device"])
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, ValueError) as err:
        print(f"error: device {base['device']!r} is not available here ({err})".split("\n")[0], file=sys.stderr)
        return 1
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:
            return _sweep(experiment, sweep, base, args, dataset, device)
        finally:
            dist.destroy_process_group()
    return _sweep(experiment, sweep, base, args, dataset, device)


def _sweep(experiment, sweep, base, args, dataset, device) -> int:
    import torch
    import data
    import plotting
    from train import Split, atomic_save, dist_rank_world, resolve_precision, train_run

    rank, world = dist_rank_world()
    lead = rank == 0  # only rank 0 prints and writes checkpoints, results and plots
    say = print if lead else (lambda *a, **k: None)
    # the same config on every rank and for any number of processes
    base["device"] = (device.type if world > 1 else str(device)) if base["device"] == "auto" else base["device"]
    base["precision"] = resolve_precision(base["precision"], device)
    train_idx, val_idx = data.split_indices(len(dataset.train_labels), base["regime"],
                                            base["train_size"], base["val_size"])
    split = Split(dataset, train_idx, val_idx, base["test_size"], base["batch_size"], base["image_size"], device)
    say(f"{experiment}: {len(sweep)} settings x {args.seeds} seed(s) on {dataset.name} from {dataset.source}: "
        f"{len(train_idx)} train / {len(val_idx)} val / {len(split.test.indices)} test images at "
        f"{base['image_size']} px, {base['epochs']} epochs, {device}, {base['precision']}"
        + (f", {world} processes" if world > 1 else ""), flush=True)

    try:
        results = read_results(args.out, experiment)
    except ValueError as err:
        say(f"error: {err}", file=sys.stderr)
        return 1
    by_key = {(r["name"], r["seed"]): r for r in results["runs"]}
    models_dir = os.path.join(args.out, "models", experiment)
    failed = []
    for name, params in sweep:
        for k in range(args.seeds):
            config = {**base, **params, "seed": base["seed"] + k}
            desc = name if args.seeds == 1 else f"{name} seed {config['seed']}"
            stem = name if args.seeds == 1 else f"{name}_seed{config['seed']}"
            old = by_key.get((name, config["seed"]))
            if old and old["status"] in ("completed", "diverged") and old["config"] == config and not args.fresh:
                say(f"{desc}: already {old['status']} in {results_path(args.out, experiment)}; skipping "
                    f"(--fresh retrains it)", flush=True)
                continue
            resume_path = os.path.join(models_dir, f"{stem}.resume.pt")
            if args.fresh and lead and os.path.exists(resume_path):
                os.remove(resume_path)
            if world > 1:
                torch.distributed.barrier()  # no rank may look for the resume file before it is gone
            record = {"name": name, "params": params, "seed": config["seed"], "config": config}
            try:
                outcome = train_run(config, split, dataset.num_classes, resume_path, desc)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # one failing run must not end the sweep...
                if world > 1:  # ...except under torchrun, where the other ranks would wait on it forever:
                    raise      # torchrun then stops them all, and a rerun resumes from the last epoch
                message = f"{type(err).__name__}: {err}".strip()
                say(f"{desc}: failed ({message.splitlines()[0]})", file=sys.stderr, flush=True)
                record.update(status="failed", error=message, history={"loss": [], "train_acc": [], "val_acc": []},
                              test_acc=None, best_val_acc=None, epochs_completed=0)
                failed.append(desc)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            else:
                state_dict = outcome.pop("model")
                record.update(outcome, world_size=world)
                if lead:
                    atomic_save({"model": state_dict, "config": config, "history": record["history"],
                                 "test_acc": record["test_acc"], "best_val_acc": record["best_val_acc"],
                                 "status": record["status"], "experiment": experiment, "name": name,
                                 "num_classes": dataset.num_classes, "classes": list(map(str, dataset.classes))},
                                os.path.join(models_dir, f"{stem}.pt"))
            by_key[(name, config["seed"])] = record
            results["runs"] = list(by_key.values())
            if lead:
                write_results(args.out, results)
                if os.path.exists(resume_path) and record["status"] != "failed":
                    os.remove(resume_path)

    if not lead:
        return 1 if failed else 0

    current = {(name, base["seed"] + k) for name, _ in sweep for k in range(args.seeds)}
    plotting.plot_experiment(results, os.path.join(args.out, "images"))
    print()
    print_table([r for r in results["runs"] if (r["name"], r["seed"]) in current])
    best = results.get("best")
    if best:
        print(f"\nbest by mean validation accuracy: {best['setting']}")
        if best["at_edge"]:
            print("it lies at the edge of the swept range: widen the range (--values) before calling it optimal")
    print(f"\nresults: {results_path(args.out, experiment)}  checkpoints: {models_dir}  "
          f"plots: {os.path.join(args.out, 'images', experiment)}_*.png")
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
