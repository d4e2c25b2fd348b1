"""The command line of a sweep: one parser for every main_<ablation>.py, its validators
(each bad value ends the program with exit code 2 and one line, before any work), the
--quick preset, and how flags, preset, a script's settings and the defaults combine.

What the flags offer (datasets, precisions, the model's smallest input, ...) comes from the
modules that define it, through Options: a module here imports no top-level file."""
import argparse
import functools
import math
import os
import re
from dataclasses import dataclass

from core import storage
from core import tensorboard
from core.optimizers import OPTIMIZERS

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



def image_size(text: str, smallest: int) -> int:
    """--image-size: a side from smallest, the model's smallest input, to MAX_IMAGE_SIZE."""
    value = positive_int(text)
    if value < smallest:
        raise argparse.ArgumentTypeError(f"{text} is below {smallest}, the smallest input AlexNet accepts")
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


def tune_rate(text: str) -> tuple:
    """One --tune-lr entry: ("x", m) for a multiple xM of each setting's own rate, ("lr", r) for a rate."""
    multiple = text[:1] in ("x", "*")
    try:
        return ("x" if multiple else "lr", parse_number(text[1:] if multiple else text,
                                                        "multiple" if multiple else "rate"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
# The parser of a sweep

@dataclass(frozen=True)
class Options:
    """What a sweep's flags offer, from the modules that define it."""
    defaults: dict          # every setting at the study's value (train.DEFAULTS)
    datasets: tuple
    regimes: tuple
    precisions: tuple
    kernels: tuple
    saves: tuple            # --save's choices
    train_acc_modes: tuple
    smallest_image: int     # the model's smallest input side, in pixels
    root: str               # --out's default: the repository root


def build_parser(experiment: str, doc: str, values: list, settings: dict, values_help: str, options: Options,
                 tune_lr: bool = True):
    defaults = {**options.defaults, **settings}
    p = OneLineParser(prog=f"main_{experiment}.py", description=doc,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--values", nargs="+", metavar="V", help=f"{values_help} (default: {' '.join(values)})")
    add_data_flags(p, defaults, options)
    add_seed_flags(p, defaults, tune_lr)
    add_training_flags(p, defaults, options)
    add_output_flags(p, defaults, options)
    return p


def default(defaults: dict, key: str) -> str:
    return f"(default: {defaults[key]})"


def add_data_flags(p, defaults: dict, options: Options) -> None:
    d = functools.partial(default, defaults)
    p.add_argument("--dataset", choices=options.datasets,
                   help=f"dataset {d('dataset')}")
    p.add_argument("--data-dir", help=f"where the dataset lives or is downloaded to {d('data_dir')}")
    p.add_argument("--regime", choices=options.regimes,
                   help=f"subset: 9,000/1,000 of a fixed fifth; full: 45,000/5,000 {d('regime')}")
    p.add_argument("--epochs", type=positive_int, help=f"epochs per run {d('epochs')}")
    p.add_argument("--batch-size", type=positive_int, help=f"training batch size {d('batch_size')}")
    p.add_argument("--train-size", type=positive_int, help="cap on training images (default: the regime's)")
    p.add_argument("--val-size", type=positive_int, help="cap on validation images (default: the regime's)")
    p.add_argument("--test-size", type=positive_int, help="cap on test images (default: all)")
    p.add_argument("--image-size", type=functools.partial(image_size, smallest=options.smallest_image),
                   help=f"input side in pixels, {options.smallest_image} to {MAX_IMAGE_SIZE} {d('image_size')}")


def add_seed_flags(p, defaults: dict, tune_lr: bool) -> None:
    d = functools.partial(default, defaults)
    p.add_argument("--seed", type=seed, help=f"seed of initialisation, data order and flips {d('seed')}")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="repeat every setting with seeds seed, seed+1, ... (default: 1)")
    if tune_lr:  # not where the learning rate is what the sweep varies
        p.add_argument("--tune-lr", nargs="+", type=tune_rate, metavar="V",
                       help="train every setting at each of these learning rates (1e-4 3e-4 1e-3) or multiples of "
                            "its own rate (x0.3 x1 x3), and compare the settings each at its own best rate, "
                            "chosen on validation accuracy (default: each setting at its own rate only)")


def add_training_flags(p, defaults: dict, options: Options) -> None:
    d = functools.partial(default, defaults)
    p.add_argument("--device", help=f"auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps {d('device')}")
    p.add_argument("--precision", choices=options.precisions,
                   help="auto: bf16 autocast where the device has bf16 units (CUDA 8.0+, CPUs with AVX512-BF16 or "
                        f"AMX), fp16 with gradient scaling on CUDA 7.x (V100, T4), else fp32 {d('precision')}")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (default: off)")
    p.add_argument("--train-acc", choices=options.train_acc_modes,
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
    p.add_argument("--kernels", choices=options.kernels,
                   help="fused layers as one grouped convolution / batched matmul, as K plain ones (split: each "
                        "run's own arithmetic exactly), or auto: the faster per layer, timed on the sweep's "
                        f"shapes {d('kernels')}")


def add_output_flags(p, defaults: dict, options: Options) -> None:
    d = functools.partial(default, defaults)
    p.add_argument("--save", choices=options.saves,
                   help="what each finished run keeps in models/: both (the last epoch's weights and the best "
                        "validation epoch's, one file under both names where they are the same epoch), last, "
                        f"best, or none (its record and plots only) {d('save')}")
    p.add_argument("--no-disk-check", action="store_true",
                   help="train even where --out's free space looks too small for the sweep's checkpoints")
    p.add_argument("--out", default=options.root, type=storage.out_folder,
                   help="root for models/, images/ and results/ (default: the repository root)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that are already complete")
    p.add_argument("--forget-pending", action="store_true",
                   help="at the end, drop from this --out's plan the runs still pending that this command does "
                        "not ask for (left by an earlier sweep stopped with other --values or seeds), so that "
                        "the report and --from-results count the sweep finished; only while no other process "
                        "sweeps this experiment on this --out (default: off)")
    p.add_argument("--tensorboard", action="store_true",
                   help="write each run's curves and hyperparameters for TensorBoard into <out>/runs/<experiment>/, "
                        "live, epoch by epoch (needs the tensorboard package; default: off)")
    p.add_argument("--quick", action="store_true",
                   help="small preset for a whole sweep in minutes on 2 CPU cores: "
                        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                        + " (explicit flags win)")


def resolve_config(args, settings: dict, defaults: dict) -> dict:
    """Explicit flags, then --quick, then the script's settings, then defaults (train.DEFAULTS)."""
    config = {**defaults, **settings}
    if args.quick:
        config.update(QUICK)
    for key in defaults:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    return config


# ---------------------------------------------------------------------------
# Checks of what the flags ask, before any work

def settings_of(parser, args, values: list, make_run, prepare) -> list:
    """The sweep's settings, [(name, params)], from --values (or the script's values) and the
    script's make_run (or the one its prepare(args) returns); a bad value ends the program."""
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
    return sweep


def check_flags(parser, args, sweep: list, base: dict, world: int) -> None:
    """End the program with one line where the settings cannot be trained as the flags ask."""
    for name, params in sweep:
        if params.get("optimizer", base["optimizer"]) not in OPTIMIZERS:
            parser.error(f"argument --values: unknown optimizer in {name!r}")
    if args.tensorboard and tensorboard.missing():
        parser.error(f"argument --tensorboard: {tensorboard.missing()}")  # before any data loads
    largest, last = 2**31 - 1, base["seed"] + args.seeds - 1  # as --seed allows
    if last > largest:
        parser.error(f"argument --seeds: seeds {base['seed']} to {last} go past {largest}, the largest seed; "
                     f"use at most --seeds {largest - base['seed'] + 1}")
    if args.fuse not in ("auto", 1):
        if world > 1 and args.strategy == "ddp":
            parser.error("argument --fuse: --strategy ddp trains one run at a time; use --fuse 1")


def check_out(parser, out: str, experiment: str) -> None:
    """End the program with one line where a folder a run writes in is not writable, which
    would otherwise stop the sweep after the data loads."""
    for folder in ("results", os.path.join("results", experiment), "models", os.path.join("models", experiment),
                   "images"):
        try:
            storage.check_writable(os.path.join(out, folder))
        except storage.WriteError as err:
            parser.error(f"argument --out: {err}")
