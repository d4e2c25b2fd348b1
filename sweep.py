"""What every main_<ablation>.py shares: the command line, the sweep over its
settings, results files, checkpoints, plots and the final table.

A script gives its experiment name, its swept values as strings, a function
turning one value into (run name, config changes), and the settings in which
it differs from train.DEFAULTS (regime, epochs). Everything else is here.
"""
import argparse
import gc
import math
import os
import re
import signal
import socket
import uuid
from dataclasses import dataclass

from core import logs
from core import storage

storage.one_line_interrupts()  # before torch loads below: a Ctrl-C there is one line, not a traceback
gc.disable()  # loading torch makes half a million objects and no garbage: collecting them again and
try:  # again as they come is a third of a script's start-up CPU; after it, they are left out of collections
    from data import DATASETS, REGIMES  # noqa: E402
    from core.results import (ResultsError, add_to_plan, finished, fmt, read_results, results_path,  # noqa: E402,F401
                         run_key, same_config, table, write_record, write_results)  # fmt: the scripts use sweep.fmt
    from train import DEFAULTS, KERNELS, OPTIMIZERS, PRECISIONS, SAVE_CHOICES, TRAIN_ACC_MODES  # noqa: E402
finally:
    gc.enable()
    gc.freeze()

ROOT = os.path.dirname(os.path.abspath(__file__))
QUICK = dict(image_size=67, train_size=1000, val_size=250, test_size=1000, epochs=5)


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def ascii_only(text: str) -> str:
    """text, or ValueError where it holds what int() and float() take but no one means on a
    command line: '1_0', or digits of other scripts ('１０')."""
    if not text.isascii() or "_" in text:
        raise ValueError(text)
    return text


class OneLineParser(argparse.ArgumentParser):
    """Bad input ends the program with exit code 2 and one line, before any work."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if hasattr(self, "_negative_number_matcher"):  # -1e-4 is a value (that --values refuses), not a flag
            self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def whole_number(text: str, low: int = 1, high: int | None = None) -> int:
    """An integer in [low, high]; argparse reports the ArgumentTypeError as one line."""
    try:
        value = int(ascii_only(text))
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


MAX_FUSE = 64
MAX_IMAGE_SIZE = 1024  # 20x the study's pixels per image; larger sides only exhaust memory


def image_size(text):
    from alexnet import MIN_IMAGE_SIZE
    value = positive_int(text)
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is below {MIN_IMAGE_SIZE}, the smallest input AlexNet accepts")
    if value > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is above {MAX_IMAGE_SIZE}, the largest input this repository "
                                         f"trains at (the study's is 227)")
    return value


def seconds(text: str) -> float:
    try:
        value = float(ascii_only(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more seconds")
    return value


def fuse(text: str):
    return "auto" if text == "auto" else whole_number(text, 1, MAX_FUSE)


def parse_number(text: str, what: str = "value", allow_zero: bool = False) -> float:
    """A finite number above zero (or at least zero); ValueError with one clear sentence otherwise."""
    try:
        value = float(ascii_only(text))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} {text!r} must be {'zero or ' if allow_zero else ''}a positive number")
    return value + 0.0  # -0 becomes 0, so "-0" and "0" name the same run


def build_parser(experiment: str, doc: str, values: list, settings: dict, values_help: str, tune_lr: bool = True):
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
    p.add_argument("--image-size", type=image_size,
                   help=f"input side in pixels, 67 to {MAX_IMAGE_SIZE} {d('image_size')}")
    p.add_argument("--seed", type=seed, help=f"seed of initialisation, data order and flips {d('seed')}")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="repeat every setting with seeds seed, seed+1, ... (default: 1)")
    if tune_lr:  # not where the learning rate is what the sweep varies
        p.add_argument("--tune-lr", nargs="+", type=tune_rate, metavar="V",
                       help="train every setting at each of these learning rates (1e-4 3e-4 1e-3) or multiples of "
                            "its own rate (x0.3 x1 x3), and compare the settings each at its own best rate, "
                            "chosen on validation accuracy (default: each setting at its own rate only)")
    p.add_argument("--device", help=f"auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps {d('device')}")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto: bf16 autocast where the device has bf16 units (CUDA 8.0+, CPUs with AVX512-BF16 or "
                        f"AMX), fp16 with gradient scaling on CUDA 7.x (V100, T4), else fp32 {d('precision')}")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (default: off)")
    p.add_argument("--train-acc", choices=TRAIN_ACC_MODES,
                   help="epoch: counted on the training batches as they pass (augmented, dropout on); "
                        f"eval: a second pass in eval mode {d('train_acc')}")
    p.add_argument("--checkpoint-every", type=positive_int,
                   help=f"epochs between resume checkpoints {d('checkpoint_every')}")
    p.add_argument("--checkpoint-seconds", type=seconds, metavar="S",
                   help="at least this many seconds of training between resume checkpoints; 0: every "
                        f"--checkpoint-every epochs {d('checkpoint_seconds')}")
    p.add_argument("--fuse", type=fuse, default="auto", metavar="K",
                   help="train up to K runs at once as one fused model; auto: the K of 1, 2, 4, ... (as many as "
                        "fit, at most 16) that trains the most images/s in a few timed steps of this sweep, 1 "
                        "unless another K is 5%% faster, and 1 without timing where the sweep is too small for "
                        "the search to pay (default: auto)")
    p.add_argument("--kernels", choices=KERNELS,
                   help="fused layers as one grouped convolution / batched matmul, as K plain ones (split: each "
                        "run's own arithmetic exactly), or auto: the faster per layer, timed on the sweep's "
                        f"shapes {d('kernels')}")
    p.add_argument("--save", choices=SAVE_CHOICES,
                   help="what each finished run keeps in models/: both (the last epoch's weights and the best "
                        "validation epoch's, one file under both names where they are the same epoch), last, "
                        f"best, or none (its record and plots only) {d('save')}")
    p.add_argument("--no-disk-check", action="store_true",
                   help="train even where --out's free space looks too small for the sweep's checkpoints")
    p.add_argument("--out", default=ROOT, type=storage.out_folder,
                   help="root for models/, images/ and results/ (default: the repository root)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that are already complete")
    p.add_argument("--forget-pending", action="store_true",
                   help="at the end, drop from this --out's plan the runs still pending that this command does "
                        "not ask for (left by an earlier sweep stopped with other --values or seeds), so that "
                        "the report and --from-results count the sweep finished; only while no other process "
                        "sweeps this experiment on this --out (default: off)")
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


def shard(text: str) -> tuple:
    """I/N: the I-th of N shares of a sweep, 1 <= I <= N."""
    try:
        i, n = (int(ascii_only(part)) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form I/N, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: I must lie between 1 and N")
    return i, n


def add_parallel_flags(p) -> None:
    p.add_argument("--shard", type=shard, metavar="I/N",
                   help="train only the I-th of N shares of the sweep's (setting, seed) runs, for job arrays "
                        "and several machines on one --out (default: all)")
    p.add_argument("--strategy", choices=("spread", "ddp"), default="spread",
                   help="under torchrun: spread the runs over the processes, each run on one device, or "
                        "train each run with DistributedDataParallel across all of them (default: spread)")


# ---------------------------------------------------------------------------
# The sweep

@dataclass
class Job:
    """One (setting, seed) run of a sweep."""
    name: str
    params: dict
    config: dict
    stem: str  # file name of its checkpoints
    desc: str  # how the log names it
    tune: dict | None = None  # --tune-lr: {"setting", "own_lr", "params", "grid"}


def plan(sweep: list, base: dict, seeds: int, tunes: dict | None = None) -> list:
    jobs = []
    for name, params in sweep:
        for k in range(seeds):
            config = {**base, **params, "seed": base["seed"] + k}
            jobs.append(Job(name, params, config, name if seeds == 1 else f"{name}_seed{config['seed']}",
                            name if seeds == 1 else f"{name} seed {config['seed']}", (tunes or {}).get(name)))
    return jobs


def repeated_run(jobs: list) -> str | None:
    """Why jobs, an expanded plan, cannot be trained as it stands: two of its runs with one name and
    seed (or one checkpoint stem), which would share one record and one set of checkpoints, the
    later overwriting the earlier; None where every run has its own."""
    seen = set()
    for job in jobs:
        for key in ((job.name, job.config["seed"]), ("stem", job.stem)):
            if key in seen:
                return (f"the sweep would train run {job.name!r} seed {job.config['seed']} twice, one overwriting "
                        "the other's record and checkpoints; give its settings names of their own")
            seen.add(key)
    return None


def tune_rate(text: str) -> tuple:
    """One --tune-lr entry: ("x", m) for a multiple xM of each setting's own rate, ("lr", r) for a rate."""
    multiple = text[:1] in ("x", "*")
    try:
        return ("x" if multiple else "lr", parse_number(text[1:] if multiple else text,
                                                        "multiple" if multiple else "rate"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def tuned_sweep(sweep: list, base: dict, grid: list) -> tuple:
    """(the runs of --tune-lr: every setting at every rate of grid, {run name: its tune info}).
    The run at a setting's own rate keeps the setting's name, so a finished plain sweep's run
    is reused; the others are named <setting>_at_lr<rate>. ValueError for a bad grid."""
    kinds = {kind for kind, _ in grid}
    if len(kinds) > 1:
        raise ValueError("mixes rates and multiples (x...); give either rates (1e-4 3e-4) or multiples (x0.3 x1 x3)")
    labels = [("x" if kind == "x" else "") + fmt(value) for kind, value in grid]
    runs, tunes = [], {}
    for name, params in sweep:
        own = params.get("lr", base["lr"])
        rates = [(own if value == 1 else float(f"{value * own:.6g}")) if kind == "x" else value
                 for kind, value in grid]
        shown = [fmt(rate) for rate in rates]  # as names, tables and plots print them
        if len(set(rates)) < len(rates):
            raise ValueError(f"gives setting {name!r} the same rate twice ({', '.join(shown)})")
        if len(set(shown)) < len(shown):
            raise ValueError(f"gives setting {name!r} rates that print alike ({', '.join(shown)}), whose runs "
                             "would share one name; make each rate differ within its first 6 significant digits")
        near_own = [rate for rate in rates if rate != own and fmt(rate) == fmt(own)]
        if near_own:
            raise ValueError(f"gives setting {name!r} the rate {near_own[0]!r}, which prints as its own rate "
                             f"{fmt(own)} but is not it; give {fmt(own)} itself or a rate that differs within "
                             "its first 6 significant digits")
        for rate in rates:
            run = name if rate == own else f"{name}_at_lr{fmt(rate)}"
            runs.append((run, {**params, "lr": rate}))
            tunes[run] = {"setting": name, "own_lr": own, "params": params, "grid": labels}
    return runs, tunes


def all_jobs(sweep: list, base: dict, args) -> list:
    """Every (setting, seed) run of the sweep, with --tune-lr's tuning info where given."""
    return plan(sweep, base, args.seeds, getattr(args, "tunes", None))


def my_shard(jobs: list, shard) -> list:
    """The I-th of N shares of jobs (--shard I/N): every N-th, from the I-th; all where shard is None."""
    return jobs if not shard else jobs[shard[0] - 1::shard[1]]


def split_finished(jobs: list, args, experiment: str) -> tuple:
    """(jobs still to train, [(job, its record)] of those already finished in --out's results);
    with --fresh every job is still to train."""
    recorded = {} if args.fresh else {(r["name"], r["seed"]): r
                                      for r in read_results(args.out, experiment)["runs"]}
    pending, done = [], []
    for job in jobs:
        old = recorded.get((job.name, job.config["seed"]))
        if finished(old, job.config):
            done.append((job, old))
        else:
            pending.append(job)
    return pending, done


def assign(jobs: list, world: int, cost) -> list:
    """jobs split over world processes: the costliest first, each to the least loaded
    (ties to the lowest rank); deterministic, so every process computes the same."""
    loads, shares = [0.0] * world, [[] for _ in range(world)]
    for job in sorted(jobs, key=cost, reverse=True):
        r = min(range(world), key=lambda i: (loads[i], i))
        loads[r] += cost(job)
        shares[r].append(job)
    return shares


def main(ablation, argv=None) -> int:
    """Parse the command line, train every (setting, seed) of the ablation (a script's
    core.ablation.Ablation) not yet complete, and leave checkpoints, results, plots and a
    table. Returns the exit code. A script with flags of its own adds them with its
    add_flags(parser); its prepare(args) may then return the make_run to use."""
    a = ablation
    with storage.interrupts_as_exceptions():
        try:
            return _main(a.name, a.doc, a.values, a.make_run, a.settings, a.values_help, argv, a.add_flags, a.prepare,
                         a.tune_lr)
        except KeyboardInterrupt as err:
            how = " by SIGTERM" if getattr(err, "signum", None) == signal.SIGTERM else ""
            logs.problem(f"\ninterrupted{how}: finished runs and epochs are saved; run the same command "
                         "again to resume")
            return storage.exit_code_of(err)


def _main(experiment, doc, values, make_run, settings, values_help, argv, add_flags, prepare, tune_lr) -> int:
    parser = build_parser(experiment, doc, values, settings, values_help, tune_lr)
    add_parallel_flags(parser)
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
    tunes = None
    if getattr(args, "tune_lr", None):
        try:
            sweep, tunes = tuned_sweep(sweep, base, args.tune_lr)
        except ValueError as err:
            parser.error(f"argument --tune-lr: {err}")
    args.tunes = tunes
    repeated = repeated_run(plan(sweep, base, args.seeds, tunes))
    if repeated:
        parser.error(f"argument {'--tune-lr' if tunes else '--values'}: {repeated}")
    for name, params in sweep:
        if params.get("optimizer", base["optimizer"]) not in OPTIMIZERS:
            parser.error(f"argument --values: unknown optimizer in {name!r}")
    largest, last = 2**31 - 1, base["seed"] + args.seeds - 1  # as --seed allows
    if last > largest:
        parser.error(f"argument --seeds: seeds {base['seed']} to {last} go past {largest}, the largest seed; "
                     f"use at most --seeds {largest - base['seed'] + 1}")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # processes torchrun started
    if args.fuse not in ("auto", 1):
        if world > 1 and args.strategy == "ddp":
            parser.error("argument --fuse: --strategy ddp trains one run at a time; use --fuse 1")
    # every folder a run writes in: an unwritable one would otherwise stop the sweep after the data loads
    for folder in ("results", os.path.join("results", experiment), "models", os.path.join("models", experiment),
                   "images"):
        try:
            storage.check_writable(os.path.join(args.out, folder))
        except storage.WriteError as err:
            parser.error(f"argument --out: {err}")
    try:
        device = pick_device(base["device"], world)
    except argparse.ArgumentTypeError as err:
        parser.error(f"argument --device: {err}")
    except (RuntimeError, AssertionError, ValueError) as err:
        from train import unavailable_device
        parser.error(f"argument --device: {unavailable_device(base['device'], err)}")
    try:
        return run_sweep(experiment, sweep, base, args, device)
    except (storage.WriteError, ResultsError) as err:
        logs.problem(f"error: {err}. Finished runs are kept; fix this, then run the same command again to resume")
        return 1


def pick_device(name: str, world: int):
    """The training device; under torchrun on CUDA, this process's own GPU."""
    import torch
    from train import not_a_training_device, resolve_device
    device = resolve_device(name)
    problem = not_a_training_device(name, device)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.empty(1, device=device)
    return device


def run_sweep(experiment: str, sweep: list, base: dict, args, device) -> int:
    import torch.distributed as dist
    import data

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    logs.configure(quiet=rank != 0, prefix=f"[rank {rank}] " if world > 1 else "")
    if not my_shard(all_jobs(sweep, base, args), args.shard):  # nothing to train, record or plot
        runs = len(sweep) * args.seeds
        logs.info(f"shard {args.shard[0]}/{args.shard[1]} of this sweep has no runs: the sweep has only {runs} "
                  f"(setting, seed) run(s); use at most {runs} shard(s)")
        return 0
    problem = check_disk(experiment, sweep, base, args)
    if problem:
        logs.problem(f"error: {problem}")
        return 1
    try:
        dataset = data.load_dataset(base["dataset"], base["data_dir"], base["image_size"])
        train_idx, val_idx = data.split_indices(len(dataset.train_labels), base["regime"],
                                                base["train_size"], base["val_size"])
    except data.DataError as err:
        logs.problem(f"error: {err}")
        return 1
    from core.results import sweeping_path
    with storage.Presence(sweeping_path(args.out, experiment)) as present:  # while it plans and trains
        if world > 1 and not dist.is_initialized():
            # spread does no tensor collectives, and its ranks wait for each other's uneven shares
            # (wait_for_ranks): gloo, whose process has no watchdog to end it, is enough
            ddp = args.strategy == "ddp"
            dist.init_process_group("nccl" if ddp and device.type == "cuda" else "gloo")
            try:
                return _sweep(experiment, sweep, base, args, dataset, (train_idx, val_idx), device, rank, world,
                              present)
            finally:
                dist.destroy_process_group()
        return _sweep(experiment, sweep, base, args, dataset, (train_idx, val_idx), device, rank, world, present)


def _sweep(experiment, sweep, base, args, dataset, indices, device, rank, world, present) -> int:
    import torch.distributed as dist
    from train import Split, resolve_precision, tune_backends

    ddp = world > 1 and args.strategy == "ddp"
    tune_backends(device)
    # the same config on every rank and for any number of processes
    base["device"] = (device.type if world > 1 else str(device)) if base["device"] == "auto" else base["device"]
    base["precision"] = resolve_precision(base["precision"], device)
    train_idx, val_idx = indices
    split = Split(dataset, train_idx, val_idx, base["test_size"], base["batch_size"], base["image_size"], device,
                  rank=rank if ddp else 0, world_size=world if ddp else 1)
    how = (f", {world} processes, " + ("each run data-parallel over all" if ddp else "runs spread over them")
           if world > 1 else "") + (f", shard {args.shard[0]}/{args.shard[1]}" if args.shard else "")
    tunes = getattr(args, "tunes", None)
    settings = (f"{len(sweep) // len(args.tune_lr)} settings x {len(args.tune_lr)} learning rates (--tune-lr)"
                if tunes else f"{len(sweep)} settings")
    logs.info(f"{experiment}: {settings} x {args.seeds} seed(s) on {dataset.name} from {dataset.source}: "
              f"{len(train_idx)} train / {len(val_idx)} val / {len(split.test.indices)} test images at "
              f"{base['image_size']} px, {base['epochs']} epochs, {device}, {base['precision']}{how}")

    order = [name for name, _ in sweep]
    everything = all_jobs(sweep, base, args)  # with the device and precision resolved
    jobs = my_shard(everything, args.shard)
    models_dir = os.path.join(args.out, "models", experiment)
    pending, done = split_finished(jobs, args, experiment)
    for job, old in done:  # named where it is: the merged file may be missing (a full disk when it was written)
        from core.results import record_path
        where = record_path(args.out, experiment, job.name, job.config["seed"])
        logs.info(f"{job.desc}: already {old['status']} in "
                  f"{where if os.path.exists(where) else results_path(args.out, experiment)}; skipping "
                  f"(--fresh retrains it)")
    if rank == 0:  # what this sweep sets out to train, so that readers can tell it from a finished one
        add_to_plan(args.out, experiment, {run_key(j.name, j.config["seed"]): j.config for j in everything})
    mine = pending
    if world > 1 and not ddp:
        epochs_left = lambda job: job.config["epochs"] - _resume_epoch(models_dir, job)
        mine = assign(pending, world, epochs_left)[rank]
        wait_for_ranks("read", world)  # every rank has read the results before any rank writes
    trained_on = {"host": socket.gethostname(), "pid": os.getpid(), "rank": rank, "world_size": world,
                  "strategy": args.strategy if world > 1 else None, "device": str(device),
                  "shard": f"{args.shard[0]}/{args.shard[1]}" if args.shard else None}
    k, fuse_info = choose_fuse(args.fuse, mine, split, dataset.num_classes, base, device, ddp, models_dir)
    groups = make_groups(mine, k, models_dir)
    if any(len(g) > 1 for g in groups):
        logs.info(f"fused: {' + '.join(str(len(g)) for g in groups)} runs at once (--fuse {args.fuse}"
                  + (f", {k} chosen" if args.fuse == "auto" else "") + ")")
    failed = []
    for jobs_of_group in groups:
        statuses = train_jobs(experiment, jobs_of_group, args, dataset, split, models_dir,
                              {**trained_on, "fuse": fuse_info}, order, rank, ddp)
        failed += [job.desc for job, status in zip(jobs_of_group, statuses) if status == "failed"]
    present.release()  # trains nothing more: before the ranks wait for each other, so rank 0's finish may forget
    if ddp:
        dist.barrier()  # every run is recorded
    elif world > 1:
        wait_for_ranks("recorded", world)  # every run of every rank is recorded, however uneven the shares
    if rank != 0:
        return 1 if failed else 0
    return finish(experiment, args, jobs, order, models_dir, failed, everything, present)


def wait_for_ranks(name: str, world: int, poll: float = 1.0) -> None:
    """Wait until every rank has called this with this name. Unlike dist.barrier(), no timeout:
    with --strategy spread one rank may finish its share hours before another, and a barrier
    would end it after the process group's timeout (NCCL's watchdog: 10 minutes). Each rank
    counts itself in the store that torchrun's rendezvous set up; a count returns at once."""
    import time
    import torch.distributed as dist
    store = dist.distributed_c10d._get_default_store()
    key = f"alexnet-ablations/{name}"
    store.add(key, 1)
    while store.add(key, 0) < world:
        time.sleep(poll)


KNOWN_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion-mnist": 10}  # imagefolder: counted as 10


def size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def writes_resume(config: dict, start: int = 0) -> bool:
    """Whether a run of config, from epoch start, can still write a resume file: only after an
    epoch that is not its last and is a multiple of checkpoint_every (train._train_group's `due`).
    --checkpoint-seconds only delays it, by epoch times no estimate knows beforehand."""
    every = config["checkpoint_every"]
    return (start // every + 1) * every < config["epochs"]


def disk_needs(experiment: str, sweep: list, base: dict, args) -> dict | None:
    """What this sweep will write under --out/models, from the model's real parameter count and
    its optimizers' real state (checkpoints.py): {"pending", "file", "files", "resume", "k",
    "low", "high", "folder"}; None when nothing is left to train. Only what can be written
    counts: no second checkpoint where a run has one epoch (its best is its last), no resume
    file where no epoch but the last is left to a run (writes_resume)."""
    from core import checkpoints
    pending, _ = split_finished(my_shard(all_jobs(sweep, base, args), args.shard), args, experiment)
    if not pending:
        return None
    classes = KNOWN_CLASSES.get(base["dataset"], 10)
    files = {"both": 2, "last": 1, "best": 1, "none": 0}[base["save"]]
    if all(job.config["epochs"] == 1 for job in pending):
        files = min(files, 1)
    models_dir = os.path.join(args.out, "models", experiment)
    resuming = [job for job in pending
                if writes_resume(job.config, 0 if args.fresh else _resume_epoch(models_dir, job))]
    k = min(len(resuming), MAX_AUTO_FUSE if args.fuse == "auto" else args.fuse)
    resume = max((checkpoints.resume_bytes(job.config, classes, with_best=True) for job in resuming), default=0)
    file = checkpoints.final_bytes(base, classes)
    return {"pending": len(pending), "file": file, "files": files, "resume": resume, "k": k,
            "low": len(pending) * min(files, 1) * file + min(k, 1) * resume,  # best = last everywhere; one resume file
            "high": len(pending) * files * file + k * resume, "folder": models_dir}


def check_disk(experiment: str, sweep: list, base: dict, args) -> str | None:
    """Print what the sweep will write beside the free space of --out's filesystem; return one
    sentence where even the least it can write does not fit (unless --no-disk-check); warn
    where only the most does not."""
    import shutil
    needs = disk_needs(experiment, sweep, base, args)
    if needs is None:
        return None
    existing = os.path.abspath(needs["folder"])
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    both = " (one file where the best epoch is the last)" if needs["files"] == 2 else ""
    logs.info(f"disk: this sweep writes up to {size(needs['high'])} in {needs['folder']}: {needs['pending']} run(s) "
              f"x {needs['files']} checkpoint file(s) of {size(needs['file'])} (--save {base['save']}){both}, and "
              + (f"up to {needs['k']} resume file(s) of up to {size(needs['resume'])} alive at once" if needs["k"]
                 else "no resume file (one is written only after an epoch that is not a run's last)")
              + f"; {size(free)} free there")
    if needs["low"] > free and not args.no_disk_check:
        return (f"{existing} has {size(free)} free, and this sweep needs at least {size(needs['low'])} there "
                f"({size(needs['high'])} at most); free some space, choose another --out, keep less with --save, "
                f"or pass --no-disk-check to train anyway")
    if needs["low"] <= free < needs["high"]:  # it may fit (best epochs last, few resume files at once) or not
        logs.problem(f"warning: {existing} has {size(free)} free, less than the {size(needs['high'])} this sweep "
                     f"may write (it needs at least {size(needs['low'])}); it goes on, but may run out of space "
                     f"before it ends: keep less with --save or free some space to be sure")
    return None


MAX_AUTO_FUSE = 16
FUSE_MARGIN = 1.05    # --fuse auto takes a K above 1 only where it trains this much faster than K = 1
SEARCH_SHARE = 0.03   # ... and times candidates only where that costs at most this share of the sweep's images
TRIAL_WARMUP, TRIAL_STEPS = 2, 3  # steps per candidate K: untimed (cuDNN's autotuner settles), then timed


def run_bytes(config: dict) -> int:
    """Memory one fused run needs, estimated: fp32 weights, gradients and two optimizer
    states (16 bytes per parameter); training activations, about 1.2 M values per image at
    227 px held for the backward pass, 8 bytes each; evaluation at batch 512, where only
    conv1's output and its activation (290,400 values each at 227 px, bf16) are alive at
    once. About 2.1 GB per run at 227 px. Only an upper bound for the candidates of
    --fuse auto: the timed steps find what really fits."""
    from core import checkpoints
    params = checkpoints.parameter_count(config["image_size"], 10)
    area = (config["image_size"] / 227) ** 2
    return int(16 * params + 1.2e6 * area * 8 * config["batch_size"] + 2 * 290_400 * area * 2 * 512)


def free_memory(device) -> int:
    """Bytes free for training: the CUDA device's, else the machine's available memory."""
    import torch
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fuse_candidates(runs: int, bound: int) -> list:
    """1, 2, 4, ... up to the number of runs and the memory bound."""
    limit, ks = max(1, min(runs, bound, MAX_AUTO_FUSE)), [1]
    while ks[-1] * 2 <= limit:
        ks.append(ks[-1] * 2)
    return ks


def measure_fuse(candidates: list, measure) -> dict:
    """{K: training images/s} of measure(K) for each candidate in turn; an out-of-memory error
    ends the search there (that K: None)."""
    import train
    table = {}
    for k in candidates:
        try:
            table[k] = measure(k)
        except Exception as err:  # noqa: BLE001 (only out of memory is expected here)
            if not train.out_of_memory(err):
                raise
            table[k] = None
            train.release_memory()
            break
    return table


def pick_fuse(table: dict, margin: float = FUSE_MARGIN) -> int:
    """The K with the most images/s, where it beats K = 1 by margin; else 1."""
    timed = {k: v for k, v in table.items() if v}
    best = max(timed, key=lambda k: (timed[k], -k))
    return best if best == 1 or timed[best] >= margin * timed.get(1, 0) else 1


def choose_fuse(spec, jobs: list, split, num_classes: int, base: dict, device, ddp: bool, models_dir: str) -> tuple:
    """(K, how it was chosen) for --fuse: as given, or for auto by timing candidate K on a few
    real steps of this sweep's runs and shapes (HFTA's way: a dry run, not a formula)."""
    import train
    if spec != "auto":
        return spec, {"how": f"--fuse {spec}"}
    if ddp:
        return 1, {"how": "--strategy ddp trains one run at a time"}
    candidates = fuse_candidates(len(jobs), free_memory(device) * 9 // 10 // run_bytes(base))
    if len(candidates) == 1:
        return 1, {"how": "auto: one run to train, or room for one" if len(jobs) > 1 else "auto: one run to train"}
    # each candidate's steps, and for K > 1 about two steps' worth of timing the kernels' forms
    searched = sum((TRIAL_WARMUP + TRIAL_STEPS + (2 if k > 1 else 0)) * k * base["batch_size"] for k in candidates)
    swept = sum(job.config["epochs"] - _resume_epoch(models_dir, job) for job in jobs) * len(split.train.indices)
    if searched > SEARCH_SHARE * swept:
        logs.info(f"--fuse auto: timing K = {', '.join(map(str, candidates))} would cost {100 * searched / swept:.0f}% "
                  f"of this sweep's training, more than {100 * SEARCH_SHARE:.0f}%; training one run at a time "
                  f"(--fuse K fuses K runs)")
        return 1, {"how": f"auto: sweep too small to time candidates ({100 * searched / swept:.0f}% of its "
                          f"training), one run at a time"}
    logs.info(f"--fuse auto: timing K = {', '.join(map(str, candidates))} on {TRIAL_STEPS} steps each of this "
              f"sweep's runs ({100 * searched / swept:.1f}% of its training)")
    table = measure_fuse(candidates, lambda k: train.trial_images_per_s(
        [job.config for job in jobs[:k]], split, num_classes, TRIAL_WARMUP, TRIAL_STEPS))
    k = pick_fuse(table)
    one = table[1]
    lines = ["   K  training images/s  vs K = 1"]
    for key, ips in table.items():
        lines.append(f"  {key:2d}  " + ("out of memory" if ips is None else f"{ips:17.1f}  {ips / one:7.2f}x"))
    logs.info("\n".join(lines) + f"\n--fuse auto: K = {k}"
              + ("" if k > 1 else f" (no K above 1 trained {100 * (FUSE_MARGIN - 1):.0f}% faster)"))
    return k, {"how": f"auto: timed, the most images/s (another K only where {FUSE_MARGIN:.2f}x K = 1)",
               "measured": [{"k": key, "images_per_s": ips} for key, ips in table.items()], "chosen": k}


def make_groups(jobs: list, k: int, models_dir: str) -> list:
    """jobs in groups of at most k that train together: runs resumed from the same epoch,
    in as few groups as possible, of sizes as even as possible, in sweep order."""
    if k == 1:
        return [[job] for job in jobs]
    by_epoch = {}
    for job in jobs:
        by_epoch.setdefault(_resume_epoch(models_dir, job), []).append(job)
    groups = []
    for bucket in by_epoch.values():
        n = -(-len(bucket) // k)  # ceil
        size, extra = divmod(len(bucket), n)
        start = 0
        for i in range(n):
            end = start + size + (1 if i < extra else 0)
            groups.append(bucket[start:end])
            start = end
    return groups


def _resume_epoch(models_dir: str, job: Job) -> int:
    """Epochs a run's resume file holds (0 if none or unreadable): for balancing work only."""
    from core import checkpoints
    path = checkpoints.resume_path(models_dir, job.stem)
    if not os.path.exists(path):
        return 0
    try:
        state = checkpoints.load(path, mmap=True)  # reads only what it touches
        return int(state["epoch"]) if same_config(state.get("config"), job.config) else 0
    except (checkpoints.CheckpointError, KeyError, TypeError, ValueError):
        return 0


def train_jobs(experiment, jobs, args, dataset, split, models_dir, trained_on, order, rank, ddp) -> list:
    """Train jobs as one fused group (those that no other process holds or has finished
    since the sweep began) and record each run as soon as it finishes. Returns each job's
    status, or "skipped"."""
    import torch.distributed as dist
    from core import checkpoints
    import train

    lead = rank == 0 or not ddp  # the process that writes these runs' files
    claims, statuses, take = [], ["skipped"] * len(jobs), []
    try:
        if lead:
            latest = {} if args.fresh else {(r["name"], r["seed"]): r
                                            for r in read_results(args.out, experiment)["runs"]}
            for job in jobs:
                claim = storage.Claim(os.path.join(models_dir, f".{job.stem}.lock"))
                if not claim.acquire():
                    logs.info(f"{job.desc}: being trained by another process on this --out; skipped here")
                    take.append(False)
                    continue
                claims.append(claim)
                remove_left_behind(experiment, args.out, models_dir, job)
                if finished(latest.get((job.name, job.config["seed"])), job.config):
                    logs.info(f"{job.desc}: finished meanwhile by another process; skipping")
                    take.append(False)
                    continue
                take.append(True)
        if ddp:  # every rank trains what rank 0 decided
            shared = [take]
            dist.broadcast_object_list(shared, src=0)
            take = shared[0]
        chosen = [i for i, t in enumerate(take) if t]
        if not chosen:
            return statuses
        resume_paths = [checkpoints.resume_path(models_dir, jobs[i].stem) for i in chosen]
        if args.fresh and lead:
            for path in resume_paths:
                if os.path.exists(path):
                    os.remove(path)
        if ddp:
            dist.barrier()  # no rank may look for a resume file before it is gone
        names = [f"{jobs[i].name} seed {jobs[i].config['seed']}" for i in chosen]

        def record(j: int, outcome: dict, part: list) -> None:
            """Record run chosen[j], trained in a group with the runs chosen[part]."""
            job = jobs[chosen[j]]
            entry = {"name": job.name, "params": job.params, "seed": job.config["seed"], "config": job.config,
                     **({"tune": job.tune} if job.tune else {})}
            state_dict, best_state = outcome.pop("model", None), outcome.pop("best_model", None)
            entry.update(outcome, trained_on=trained_on, world_size=split.world_size,
                         fused_with=[names[i] for i in part if i != j],
                         classes=[str(c) for c in dataset.classes],
                         images={part: len(getattr(split, part).indices) for part in ("train", "val", "test")},
                         run_id=uuid.uuid4().hex)  # ties evaluations to this training's checkpoints
            if lead:
                with storage.interrupts_deferred():  # a finished run is recorded whole, even on Ctrl-C
                    record_run(experiment, entry, state_dict, best_state, dataset, args.out, models_dir, job.stem,
                               order)
            statuses[chosen[j]] = entry["status"]

        def train_part(part: list) -> None:
            """Train the runs chosen[part] as one group; out of memory splits it in two halves,
            each going on from its runs' last saved epochs."""
            halves = None
            try:
                outcomes = train.train_group([jobs[chosen[j]].config for j in part], split, dataset.num_classes,
                                             [resume_paths[j] for j in part], [jobs[chosen[j]].desc for j in part],
                                             on_finish=lambda i, outcome: record(part[i], outcome, part))
            except (KeyboardInterrupt, SystemExit, storage.WriteError):
                raise
            except Exception as err:  # one failing group must not end the sweep...
                if isinstance(err.__context__, KeyboardInterrupt):  # Ctrl-C surfacing inside torch's C++ code
                    raise storage.Interrupted() from None
                if ddp:  # ...except data-parallel, where the other ranks would wait on it forever:
                    raise  # torchrun then stops them all, and a rerun resumes from the last epoch
                left = [j for j in part if statuses[chosen[j]] == "skipped"]
                message = f"{type(err).__name__}: {err}".strip()
                if train.out_of_memory(err) and len(left) > 1:
                    half = (len(left) + 1) // 2
                    halves = left[:half], left[half:]  # trained below, once this error has gone
                elif train.out_of_memory(err):
                    config = jobs[chosen[left[0]]].config if left else {}
                    message = (f"out of memory ({logs.shorten(message.splitlines()[0], 160)}): one run at batch "
                               f"{config.get('batch_size')} and {config.get('image_size')} px does not fit on "
                               f"{split.train.device}; lower --batch-size or --image-size, or train on a device "
                               f"with more memory")
                for j in left if halves is None else []:
                    logs.problem(f"{jobs[chosen[j]].desc}: failed ({message.splitlines()[0]})")
                    record(j, {"status": "failed", "error": message, "test_acc": None, "best_val_acc": None,
                               "history": {"loss": [], "train_acc": [], "val_acc": []}, "epochs_completed": 0},
                           part)
            else:  # runs the trainer returned without reporting them finished
                for i, outcome in enumerate(outcomes):
                    if statuses[chosen[part[i]]] == "skipped" and outcome is not None:
                        record(part[i], outcome, part)
            # Out of the except block: the error's traceback held the frames of the failed group's
            # training (its weights, gradients, optimizer states, activations); only now can they go.
            train.release_memory()
            if halves:
                logs.info(f"out of memory with {sum(map(len, halves))} runs fused on {split.train.device}; going on "
                          f"as {len(halves[0])} + {len(halves[1])}, each run from its last saved epoch")
                for half in halves:
                    train_part(half)

        train_part(list(range(len(chosen))))
        return statuses
    finally:
        for claim in claims:
            claim.release()


def remove_left_behind(experiment: str, out: str, models_dir: str, job: Job) -> None:
    """Remove the temporary files that a writer of the run's files (checkpoints, record), killed
    inside a write, left; only while holding the run's claim, under which alone they are written."""
    from core import checkpoints
    from core.results import record_path
    removed = storage.remove_left_behind([checkpoints.resume_path(models_dir, job.stem),
                                          checkpoints.final_path(models_dir, job.stem),
                                          checkpoints.best_path(models_dir, job.stem),
                                          record_path(out, experiment, job.name, job.config["seed"])])
    if removed:
        logs.info(f"{job.desc}: removed {len(removed)} temporary file(s) left by an interrupted write: "
                  + ", ".join(os.path.basename(path) for path in removed))


def record_run(experiment, record, state_dict, best_state, dataset, out, models_dir, stem, order) -> None:
    """Final checkpoints first (what --save keeps: the last epoch's weights, the best
    validation epoch's, both, or none; where the best epoch is the last, one file under both
    names), then the run's record, listing them, then the merged results; a failed run
    (state_dict None) keeps its resume file, so that the rerun resumes."""
    from core import checkpoints
    save = record["config"].get("save", "both")
    last_path, best_path = checkpoints.final_path(models_dir, stem), checkpoints.best_path(models_dir, stem)
    best_is_last = record.get("best_epoch") is not None and record["best_epoch"] == record.get("epochs_completed")
    kept = {"last": None, "best": None, "best_is_last": best_is_last}
    if state_dict is not None and save in ("both", "last"):
        checkpoints.save({**checkpoints.final_state(state_dict, record, experiment, dataset.num_classes,
                                                    dataset.classes), "epoch": record.get("epochs_completed")},
                         last_path)
        kept["last"] = os.path.basename(last_path)
    if best_state is not None and save in ("both", "best"):
        if kept["last"] and best_is_last:  # the same weights, epoch and test accuracy: one file, two names
            checkpoints.link_or_copy(last_path, best_path)
        else:
            best = {**record, "test_acc": record.get("test_acc_at_best")}
            checkpoints.save({**checkpoints.final_state(best_state, best, experiment, dataset.num_classes,
                                                        dataset.classes), "epoch": record["best_epoch"]},
                             best_path)
        kept["best"] = os.path.basename(best_path)
    if state_dict is not None:
        for name, path in (("last", last_path), ("best", best_path)):
            if kept[name] is None and os.path.exists(path):  # an earlier training's, no longer this run's
                os.remove(path)
        record["checkpoints"] = kept
    if state_dict is not None:
        forget_evaluations(out, experiment, stem)
    write_record(out, experiment, record)
    write_results(out, experiment, order)
    resume = checkpoints.resume_path(models_dir, stem)
    if state_dict is not None and os.path.exists(resume):
        os.remove(resume)


def forget_evaluations(out: str, experiment: str, stem: str) -> None:
    """Remove evaluate.py's files of a run's earlier checkpoints, which a new training replaces."""
    import evaluate
    for name in (stem, f"{stem}.best"):
        for path in evaluate.output_paths(out, experiment, name).values():
            if os.path.exists(path):
                os.remove(path)


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


def finish(experiment, args, jobs, order, models_dir, failed, everything, present) -> int:
    """Results file, plots and the table of this sweep's runs, from what is recorded; a line on
    runs still pending in the plan that this command did not ask for (everything: what it asked
    for, every shard's), or with --forget-pending, those runs dropped from the plan."""
    import plotting
    from core.results import forget_pending
    asked = {run_key(job.name, job.config["seed"]) for job in everything}
    forget_refused = False
    if args.forget_pending:  # before the results file is written, so that its progress counts without them
        with present.alone() as alone:  # no other sweep of it under way, and none starts meanwhile
            dropped = forget_pending(args.out, experiment, asked) if alone else []
        forget_refused = not alone
        if forget_refused:
            logs.problem(f"--forget-pending: another process is sweeping {experiment} on this --out, and the pending "
                         "runs may be its own; nothing dropped from the plan: run this command again once it ends")
        else:
            logs.info(f"--forget-pending: dropped {len(dropped)} pending run(s) that this command does not ask for "
                      f"from the plan of {experiment}" + (f": {', '.join(dropped)}" if dropped else ""))
    results = write_results(args.out, experiment, order)
    plotting.plot_experiment(results, os.path.join(args.out, "images"))
    wanted = {(job.name, job.config["seed"]) for job in jobs}
    shown = [r for r in results["runs"] if (r["name"], r["seed"]) in wanted]
    logs.info("\n" + table(shown))
    missing = len(wanted) - len(shown)
    if missing:
        logs.info(f"\n{missing} run(s) of this {'shard' if args.shard else 'sweep'} are not recorded yet "
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
    logs.info(f"\nresults: {results_path(args.out, experiment)}  checkpoints: {models_dir}  "
              f"plots: {os.path.join(args.out, 'images', experiment)}_*.png")
    pending = results["progress"]["pending"]
    others = [key for key in pending if key not in asked]
    if others and not forget_refused and not any(key in asked for key in pending):
        from core.results import listed
        logs.info(f"\nevery run this command asks for is finished, but the plan of {experiment} on this --out still "
                  f"holds {len(others)} pending run(s) it does not ask for ({listed(others, 6)}), so the report and "
                  "--from-results count the sweep unfinished: run the command that asked for them again to train "
                  "them, or add --forget-pending to this one to drop them")
    if failed:
        logs.problem(f"failed runs: {', '.join(failed)}")
        return 1
    return 1 if forget_refused else 0

