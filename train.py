"""The shared training loop: one run of AlexNet from a plain config dict.

DEFAULTS holds every setting in one place, at the study's values. Scripts state
only what they change. A run keeps its data on the training device, takes no
host-device synchronisation per step, writes an atomic resume checkpoint every
--checkpoint-every epochs, and stops with status "diverged" if its loss stops
being finite.
"""
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

import checkpoints
import logs
from alexnet import AlexNet
from data import DeviceLoader

DEFAULTS = dict(
    dataset="cifar10",
    data_dir="data",
    regime="subset",       # "subset": 9,000 / 1,000 of a fixed fifth; "full": 45,000 / 5,000
    train_size=None,       # None: the regime's size
    val_size=None,
    test_size=None,        # None: the whole official test split
    image_size=227,
    batch_size=64,
    epochs=25,
    optimizer="adam",
    lr=1e-4,
    l1=0.0,
    l2=0.0,
    activation="relu",
    dropout=0.0,
    seed=0,
    device="auto",
    precision="auto",
    compile=False,
    train_acc="epoch",     # "epoch": counted on the training batches as they pass; "eval": a second pass
    checkpoint_every=1,
)

# name -> (torch class, the study's learning rate for it, extra arguments)
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, 0.1, {}),
    "adagrad": (torch.optim.Adagrad, 0.01, {}),
    "adam": (torch.optim.Adam, 1e-4, {}),
    # extras beyond the study's three
    "sgd-momentum": (torch.optim.SGD, 0.01, {"momentum": 0.9}),
    "rmsprop": (torch.optim.RMSprop, 1e-4, {}),
    "adamw": (torch.optim.AdamW, 1e-4, {}),
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAIN_ACC_MODES = ("epoch", "eval")
# per-epoch timings kept in each run's record, so every speed claim can be checked from results files
TIMINGS = ("train_seconds", "images_per_s", "eval_seconds", "checkpoint_seconds")


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The named optimizer with its fused kernel where torch has one: the same update,
    about 6x faster than the default on CPU for AlexNet's 58M parameters."""
    cls, _, extra = OPTIMIZERS[name]
    params = list(params)
    try:
        return cls(params, lr=lr, fused=True, **extra)
    except (TypeError, RuntimeError):  # no fused kernel for this optimizer or device
        return cls(params, lr=lr, **extra)


def resolve_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, where bf16 autocast roughly doubles AlexNet's speed on CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def weight_penalty(model: torch.nn.Module, l1: float, l2: float) -> torch.Tensor:
    """L1 * sum(|w|) + L2 * sum(w^2) over every parameter, biases included."""
    params = list(model.parameters())
    total = params[0].new_zeros(())
    if l1:
        total = total + l1 * torch.stack([p.abs().sum() for p in params]).sum()
    if l2:
        total = total + l2 * torch.stack([p.pow(2).sum() for p in params]).sum()
    return total


def all_reduce_sum(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum t over the processes of a data-parallel run (--strategy ddp); t itself otherwise."""
    if world_size > 1:
        dist.all_reduce(t)
    return t


def make_train_step(model, optimizer, scaler, precision: str, l1: float = 0.0, l2: float = 0.0,
                    forward=None):
    """One optimisation step on a batch; what it returns stays on the device, so
    that nothing waits for the GPU."""
    device = next(model.parameters()).device
    forward = model if forward is None else forward

    def step(x, y, weight=None):
        """weight scales the summed cross-entropy: 1 / len(y) (the default) makes it the
        batch mean; world_size / global batch size makes DDP's gradient averaging
        over processes give the mean over the global batch. Returns the summed
        objective (cross-entropy plus penalty per image) and the logits."""
        with autocast(device, precision):
            logits = forward(x)
            ce_sum = F.cross_entropy(logits, y, reduction="sum")
        loss = ce_sum * (1.0 / max(len(y), 1) if weight is None else weight)
        objective_sum = ce_sum.detach().float()
        if l1 or l2:
            penalty = weight_penalty(model, l1, l2)
            loss = loss + penalty
            objective_sum = objective_sum + penalty.detach() * len(y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return objective_sum, logits.detach()

    return step


def use_channels_last(device: torch.device) -> bool:
    """channels_last speeds up convolutions on CUDA tensor cores; on CPU it measured no gain."""
    return device.type == "cuda"


def build_model(config: dict, num_classes: int, device: torch.device):
    """The run's AlexNet (initialised from the global seed) and its optimizer and grad scaler."""
    model = AlexNet(num_classes=num_classes, activation=config["activation"], dropout=config["dropout"],
                    image_size=config["image_size"]).to(device)
    if use_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config["optimizer"], model.parameters(), config["lr"])
    scaler = torch.amp.GradScaler(device.type, enabled=config["precision"] == "fp16")
    return model, optimizer, scaler


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DeviceLoader, precision: str) -> float:
    """Accuracy in eval mode (dropout off), one synchronisation at the end."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    for x, y in loader.batches():
        with autocast(loader.device, precision):
            correct += (model(x).argmax(1) == y).sum()
    return all_reduce_sum(correct, loader.world_size).item() / max(len(loader.indices), 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------
# One run

class Split:
    """The three loaders of a run, built once per sweep and shared by its runs.
    rank and world_size > 1: this process's share of each batch of a data-parallel run."""

    def __init__(self, dataset, train_idx, val_idx, test_size, batch_size, image_size, device,
                 eval_batch_size=None, rank: int = 0, world_size: int = 1):
        eval_bs = eval_batch_size or (512 if device.type == "cuda" else 128)
        test_idx = torch.arange(len(dataset.test_labels))[:test_size]
        opts = dict(channels_last=use_channels_last(device), rank=rank, world_size=world_size)
        self.rank, self.world_size = rank, world_size
        self.train = DeviceLoader(dataset.train_images, dataset.train_labels, train_idx, batch_size,
                                  image_size, device, train=True, **opts)
        # the same device-resident images, walked in order without augmentation
        self.train_eval = DeviceLoader(self.train.images, self.train.labels, train_idx, eval_bs,
                                       image_size, device, train=False, **opts)
        self.val = DeviceLoader(self.train.images, self.train.labels, val_idx, eval_bs,
                                image_size, device, train=False, **opts)
        self.test = DeviceLoader(dataset.test_images, dataset.test_labels, test_idx, eval_bs,
                                 image_size, device, train=False, **opts)


def resume(resume_path: str | None, config: dict, model, optimizer, scaler, desc: str):
    """(epoch to start from, history) after loading resume_path where it holds this
    config's state. Raises checkpoints.CheckpointError if the file is damaged."""
    fresh = 0, {"loss": [], "train_acc": [], "val_acc": []}
    if not resume_path or not os.path.exists(resume_path):
        return fresh
    state = checkpoints.load(resume_path)
    if state.get("config") != config:
        logs.problem(f"{desc}: ignoring {resume_path}, written for a different config")
        return fresh
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        checkpoints.set_rng_state(state["rng"])
        epoch, history = int(state["epoch"]), state["history"]
        if not all(len(history[k]) == epoch for k in ("loss", "train_acc", "val_acc")):
            raise ValueError("its history does not match its epoch")
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise checkpoints.CheckpointError(f"{resume_path} is damaged ({str(err).splitlines()[0][:120]})") from None
    logs.info(f"{desc}: resuming from epoch {epoch + 1} of {config['epochs']} ({resume_path})")
    return epoch, history


def train_one_epoch(train_step, model, loader: DeviceLoader, seed: int, epoch: int, bar_desc: str,
                    show_bar: bool) -> tuple:
    """One pass over the training batches; returns (summed objective, correct predictions),
    summed over every process of a data-parallel run."""
    model.train()
    device = loader.device
    # objective sum and correct predictions (float64 where the device has it: exact counts)
    totals = torch.zeros(2, dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    seen = 0  # this process's images so far, for the progress bar
    bar = tqdm(loader.batches(seed, epoch), total=len(loader), leave=False, desc=bar_desc,
               disable=not show_bar, dynamic_ncols=True)
    refresh = max(1, len(loader) // 4)
    for step, (x, y) in enumerate(bar):
        objective_sum, logits = train_step(x, y, loader.world_size / loader.global_batch_size(step))
        totals[0] += objective_sum
        totals[1] += (logits.argmax(1) == y).sum()
        seen += len(y)
        if show_bar and (step + 1) % refresh == 0:  # a few synchronisations per epoch, for the bar only
            loss_now, correct_now = totals.tolist()
            bar.set_postfix(loss=f"{loss_now / seen:.4f}", acc=f"{correct_now / seen:.3f}")
    bar.close()
    return tuple(all_reduce_sum(totals, loader.world_size).tolist())


def train_run(config: dict, split: Split, num_classes: int, resume_path: str | None = None,
              desc: str = "run") -> dict:
    """Train one AlexNet on split as config says; returns the run's record:
    status ("completed" or "diverged"), history, timing (per epoch: seconds of
    training, evaluation and checkpointing, and training images/s), test_acc,
    best_val_acc, and the trained model's state_dict under "model"."""
    device = split.train.device
    precision, world = config["precision"], split.world_size
    seed_everything(config["seed"])
    model, optimizer, scaler = build_model(config, num_classes, device)
    try:
        start_epoch, history = resume(resume_path, config, model, optimizer, scaler, desc)
    except checkpoints.CheckpointError as err:
        logs.problem(f"{desc}: cannot resume: {err}; starting this run from epoch 1")
        seed_everything(config["seed"])  # exactly the state a fresh run starts from
        model, optimizer, scaler = build_model(config, num_classes, device)
        start_epoch, history = 0, {"loss": [], "train_acc": [], "val_acc": []}
    # a resume file holds the timings of the epochs before the one it saved
    timing = {key: history.pop(key, []) for key in TIMINGS}
    timing = {key: t + [None] * (len(history["loss"]) - len(t)) for key, t in timing.items()}

    step_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config["compile"]:
        step_model = torch.compile(step_model)
    train_step = make_train_step(model, optimizer, scaler, precision, config["l1"], config["l2"], step_model)
    show_bar = sys.stderr.isatty() and split.rank == 0
    status, started = "completed", time.perf_counter()
    images = max(len(split.train.indices), 1)  # every process's share, together
    for epoch in range(start_epoch, config["epochs"]):
        tick = time.perf_counter()
        loss_total, correct = train_one_epoch(train_step, model, split.train, config["seed"], epoch,
                                              f"{desc} epoch {epoch + 1}/{config['epochs']}", show_bar)
        train_seconds = time.perf_counter() - tick  # the .tolist() above waited for the device
        mean_loss = loss_total / images
        if not math.isfinite(mean_loss):
            status = "diverged"
            logs.info(f"{desc}: loss is {mean_loss} in epoch {epoch + 1}; stopping this run as diverged")
            break
        tick = time.perf_counter()
        train_acc = (correct / images if config["train_acc"] == "epoch"
                     else evaluate(step_model, split.train_eval, precision))
        val_acc = evaluate(step_model, split.val, precision)
        eval_seconds = time.perf_counter() - tick
        history["loss"].append(mean_loss)
        history["train_acc"].append(train_acc)
        history["val_acc"].append(val_acc)
        logs.info(f"{desc} epoch {epoch + 1}/{config['epochs']}: loss {mean_loss:.4f}  "
                  f"train_acc {train_acc:.4f}  val_acc {val_acc:.4f}  ({images / train_seconds:.0f} images/s)")
        tick = time.perf_counter()
        last = epoch + 1 == config["epochs"]
        if resume_path and split.rank == 0 and not last and (epoch + 1) % config["checkpoint_every"] == 0:
            checkpoints.save(checkpoints.resume_state(model, optimizer, scaler, epoch + 1,
                                                      {**history, **timing}, config), resume_path)
        epoch_timing = dict(train_seconds=train_seconds, images_per_s=images / train_seconds,
                            eval_seconds=eval_seconds, checkpoint_seconds=time.perf_counter() - tick)
        for key in TIMINGS:
            timing[key].append(round(epoch_timing[key], 4))

    test_acc = evaluate(step_model, split.test, precision) if status == "completed" else None
    return {"status": status, "history": history, "timing": timing, "test_acc": test_acc,
            "best_val_acc": max(history["val_acc"], default=None),
            "epochs_completed": len(history["loss"]),
            "train_seconds": round(time.perf_counter() - started, 2),
            "model": model.state_dict()}
