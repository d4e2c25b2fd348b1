"""The training loop: K runs of AlexNet trained at once as one fused model
(fused.py), each from a plain config dict; one run is the case K = 1.

DEFAULTS holds every setting in one place, at the study's values. Scripts state
only what they change. A group of runs keeps its data on the training device,
takes no host-device synchronisation per step, writes an atomic resume
checkpoint per run (every --checkpoint-every epochs once --checkpoint-seconds
have passed), and a run whose loss stops being finite leaves the group with
status "diverged" while the others go on.
"""
import functools
import itertools
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

from core import checkpoints
from core import fused
from core import kernels
from core import logs
from core.throughput import images_per_s, train_steps
from core.device import release_memory
from alexnet import AlexNet, loaded
from data import DeviceLoader
from core.fused import FusedAlexNet, fuse_inputs
from core.optimizers import make_optimizer
from core.results import same_config

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
    checkpoint_seconds=60.0,  # at least this long between resume checkpoints: bounds their cost on fast GPUs
    kernels="auto",        # fused layers' form: "auto" (timed per layer), "grouped" or "split" (fused.py)
    save="both",           # what a finished run keeps: "last" epoch's weights, "best" validation epoch's, both, none
)
# what may differ between the runs of one fused group; every other setting they share
MEMBER_KEYS = ("optimizer", "lr", "l1", "l2", "activation", "dropout", "seed")
DROPOUT_SEED_OFFSET = 1 << 40  # a run's dropout masks come from its seed, apart from its initialisation's stream

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
KERNELS = ("auto", "grouped", "split")
SAVE_CHOICES = ("both", "last", "best", "none")
MIN_LOSS_SCALE = 1.0  # fp16: a run whose gradients overflow even at a loss scale below this has diverged
TRAIN_ACC_MODES = ("epoch", "eval")
# per-epoch timings kept in each run's record, so every speed claim can be checked from results files
TIMINGS = ("train_seconds", "images_per_s", "eval_seconds", "checkpoint_seconds")


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def all_reduce_sum(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum t over the processes of a data-parallel run (--strategy ddp); t itself otherwise."""
    if world_size > 1:
        dist.all_reduce(t)
    return t


def use_channels_last(device: torch.device) -> bool:
    """channels_last speeds up convolutions on CUDA tensor cores; on CPU it measured no gain."""
    return device.type == "cuda"


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
                 rank: int = 0, world_size: int = 1):
        eval_bs = 512 if device.type == "cuda" else 128
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
        # --kernels auto: each group shape's faster layer forms, timed once on this split's batches
        # and taken by every later group of that shape (core.kernels.choose_kernels)
        self.kernel_choices = {}


class Group:
    """K runs as one FusedAlexNet, each with its own optimizer over views of its own
    weights: one step updates every member in place, with its own lr and state.

    states[k], where given, is member k's resume state (checkpoints.resume_state's
    schema); otherwise member k starts as its run would alone: AlexNet initialised
    from the global RNG seeded with its seed."""

    def __init__(self, configs: list, num_classes: int, device: torch.device, states: list | None = None):
        states = states or [None] * len(configs)
        self.configs, self.k, self.device, self.num_classes = configs, len(configs), device, num_classes
        models, generators = [], []
        for config, state in zip(configs, states):
            shape = dict(num_classes=num_classes, activation=config["activation"], dropout=config["dropout"],
                         image_size=config["image_size"])
            generator = torch.Generator(device=device)
            generator.manual_seed(config["seed"] + DROPOUT_SEED_OFFSET)
            if state is None:
                seed_everything(config["seed"])
                model = AlexNet(**shape)
            else:  # training draws nothing more from the global RNG: its state needs no restoring
                model = loaded(state["model"], **shape)
                generator.set_state(state["rng"]["dropout"])
            models.append(model)
            generators.append(generator)
        self.model = FusedAlexNet(models, [c["activation"] for c in configs], [c["dropout"] for c in configs],
                                  generators).to(device)
        if use_channels_last(device):
            self.model = self.model.to(memory_format=torch.channels_last)
        # member k's parameters: the model's leaves sharing storage with its rows of the fused weights
        self.params = [list(member.values()) for member in self.model.member_params]
        self.optimizers = [make_optimizer(c["optimizer"], p, c["lr"]) for c, p in zip(configs, self.params)]
        # fp16: a gradient scaler per member, so that one member's overflow skips and shrinks only its own step
        self.fp16 = configs[0]["precision"] == "fp16"
        self.scalers = [torch.amp.GradScaler(device.type, enabled=self.fp16) for _ in configs]
        for optimizer, scaler, state in zip(self.optimizers, self.scalers, states):
            if state is not None:
                optimizer.load_state_dict(state["optimizer"])
                scaler.load_state_dict(state["scaler"])
        self.l1 = torch.tensor([float(c["l1"]) for c in configs], device=device)
        self.l2 = torch.tensor([float(c["l2"]) for c in configs], device=device)
        self.use_l1, self.use_l2 = any(c["l1"] for c in configs), any(c["l2"] for c in configs)

    def member_state(self, k: int) -> dict:
        """Member k's model, optimizer, scaler and dropout generator: what a resume file holds."""
        return {"model": self.model.member_state_dict(k), "optimizer": self.optimizers[k].state_dict(),
                "scaler": self.scalers[k].state_dict(),
                "rng": {"dropout": self.model.generators[k].get_state()}}

    def without(self, leaving: set) -> "Group":
        """The same group without the members in leaving, every other member's state kept.
        This group gives up its fused weights, gradients and optimizers first, so that the two
        are never on the device together (a group near the memory limit would otherwise run out
        exactly when a run diverges); the caller drops its steps over this group's model first."""
        keep = [k for k in range(self.k) if k not in leaving]
        states = [self.member_state(k) for k in keep]
        self.model = self.params = self.optimizers = None
        release_memory()
        return Group([self.configs[k] for k in keep], self.num_classes, self.device, states)

    def overflowing(self) -> set:
        """fp16: members whose gradients kept overflowing until their loss scale fell below
        MIN_LOSS_SCALE (one synchronisation; call once an epoch)."""
        if not self.fp16:
            return set()
        return {k for k, scaler in enumerate(self.scalers) if scaler.get_scale() < MIN_LOSS_SCALE}

    def choose_kernels(self, x: torch.Tensor, precision: str, how: str = "auto", chosen: dict | None = None) -> dict:
        """Each fused layer's form: the faster of grouped and split timed on x's shapes (auto),
        or the one given; returns what each run's record keeps of it. chosen: the choices
        timed so far (kernels.choose_kernels), kept by the caller across groups; None: time anew."""
        if self.k == 1:
            return {"how": "one run: plain layers"}
        if how != "auto":
            self.model.kernels = {name: how for name in fused.LAYERS}
            return {"how": f"--kernels {how}", "kernels": dict(self.model.kernels)}
        forms, timings = kernels.choose_kernels(self.model, x, lambda: autocast(self.device, precision), precision,
                                                chosen=chosen)
        return {"how": "timed per layer (seconds of forward + backward)", "kernels": forms, "seconds": timings}

    def make_step(self, precision: str, forward=None):
        """One optimisation step of every member on its own batch; what it returns stays on
        the device, so that nothing waits for the GPU."""
        model, k = self.model, self.k
        forward = model if forward is None else forward

        def step(x, y, weight, rows=None):
            """x: B x (K*C) x H x W, y: K x B. weight scales each member's summed cross-entropy:
            1 / B makes it the batch mean; world_size / global batch size makes DDP's gradient
            averaging give the mean over the global batch. Returns each member's summed
            objective (cross-entropy plus penalty per image, K) and the logits (K x B x classes).
            rows: which rows of a data-parallel global batch x holds (MemberDropout.mask)."""
            with autocast(self.device, precision):
                logits = forward(x) if rows is None else forward(x, rows)
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="none").view(k, -1).sum(1)
            losses = ce * weight  # per member; summed below, so that each gradient is its member's own
            objective = ce.detach().float()
            if self.use_l1 or self.use_l2:
                penalty = model.penalty(self.l1 if self.use_l1 else None, self.l2 if self.use_l2 else None)
                losses = losses + penalty
                objective = objective + penalty.detach() * y.shape[1]
            model.zero_grad(set_to_none=True)
            apart = self.model.apart  # the members' own leaves receive their gradients directly
            if apart:
                for params in self.params:
                    for p in params:
                        p.grad = None
            if self.fp16:  # each member's loss scaled by its own scaler's scale
                sum(scaler.scale(losses[i]) for i, scaler in enumerate(self.scalers)).backward()
            else:
                losses.sum().backward()
            for i in range(k if not apart else 0):  # hand each member's optimizer the views of its gradients
                for p, g in zip(self.params[i], self.model.member_tensors(i, grads=True).values()):
                    p.grad = g
            for optimizer, scaler in zip(self.optimizers, self.scalers):
                scaler.step(optimizer)  # skips this member's step alone where its gradients overflowed
                scaler.update()
            return objective, logits.detach()

        return step


def _unwrapped(model):
    """The FusedAlexNet under DistributedDataParallel and torch.compile wrappers."""
    while not isinstance(model, FusedAlexNet):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def eval_forwards(model: torch.nn.Module, loader: DeviceLoader, precision: str):
    """(logits, labels) of loader's batches in eval mode (dropout off), each member on the same
    images. A forward takes batch / K images, in K copies: about one evaluation batch in all
    whatever K, so evaluation's memory does not grow with K (sweep.run_bytes counts it once
    per run, a bound that holds)."""
    model.eval()
    k = _unwrapped(model).k
    chunk = max(1, loader.batch_size // k)
    for x, y in loader.batches():
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            with autocast(loader.device, precision):
                logits = model(part if k == 1 else part.repeat(1, k, 1, 1))
            yield logits, y[start:start + chunk]


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DeviceLoader, precision: str) -> list:
    """Each member's accuracy in eval mode (dropout off) on the same images; one
    synchronisation at the end."""
    correct = torch.zeros(_unwrapped(model).k, dtype=torch.int64, device=loader.device)
    for logits, y in eval_forwards(model, loader, precision):
        correct += (logits.argmax(2) == y).sum(1)
    return [c / max(len(loader.indices), 1) for c in all_reduce_sum(correct, loader.world_size).tolist()]


def group_batches(loader: DeviceLoader, seeds: list, epoch: int):
    """(x, y) per step for a group: each member's own batch from its seed (order and flips),
    side by side in the channels of x (B x (K*C) x H x W); y is K x B. Members that share a
    seed share one transform."""
    unique = list(dict.fromkeys(seeds))
    for batches in zip(*(loader.batches(s, epoch) for s in unique)):
        by_seed = dict(zip(unique, batches))
        x = fuse_inputs([by_seed[s][0] for s in seeds]).contiguous(memory_format=loader.memory_format)
        yield x, torch.stack([by_seed[s][1] for s in seeds])


def endless_group_batches(loader: DeviceLoader, seeds: list):
    """group_batches of epoch 0, 1, 2, ... without end: batches for timing steps."""
    for epoch in itertools.count():
        yield from group_batches(loader, seeds, epoch)


def train_one_epoch(step, model, loader: DeviceLoader, seeds: list, epoch: int, bar_desc: str,
                    show_bar: bool) -> list:
    """One pass over the training batches; returns per member (summed objective, correct
    predictions), summed over every process of a data-parallel run."""
    model.train()
    device = loader.device
    # objective sums and correct predictions (float64 where the device has it: exact counts)
    totals = torch.zeros(len(seeds), 2, dtype=torch.float32 if device.type == "mps" else torch.float64,
                         device=device)
    seen = 0  # this process's images per member so far, for the progress bar
    bar = tqdm(group_batches(loader, seeds, epoch), total=len(loader), leave=False, desc=bar_desc,
               disable=not show_bar, dynamic_ncols=True)
    refresh = max(1, len(loader) // 4)
    for i, (x, y) in enumerate(bar):
        # data-parallel: which rows of the global batch this process holds, for its dropout masks
        rows = (loader.rank, loader.world_size, loader.global_batch_size(i)) if loader.world_size > 1 else None
        objective, logits = step(x, y, loader.world_size / loader.global_batch_size(i), rows)
        totals[:, 0] += objective
        totals[:, 1] += (logits.argmax(2) == y).sum(1)
        seen += y.shape[1]
        if show_bar and (i + 1) % refresh == 0:  # a few synchronisations per epoch, for the bar only
            loss_now, correct_now = totals.sum(0).tolist()
            bar.set_postfix(loss=f"{loss_now / seen / len(seeds):.4f}", acc=f"{correct_now / seen / len(seeds):.3f}")
    bar.close()
    return all_reduce_sum(totals, loader.world_size).tolist()


class Member:
    """One run of a group: its config and files, and what it has recorded so far."""

    def __init__(self, config: dict, desc: str, resume_path: str | None, index: int = 0):
        self.config, self.desc, self.resume_path = config, desc, resume_path
        self.index = index  # its place among the runs given to train_group
        self.outcome = None  # its record, once it has finished
        self.history = {"loss": [], "train_acc": [], "val_acc": []}
        self.timing = {key: [] for key in TIMINGS}
        self.status, self.state = "completed", None
        self.kernels = None  # how the layers of its (last) group were run: Group.choose_kernels
        self.best = None  # {"epoch" (1-based), "val_acc", "model": AlexNet state_dict}: the best validation epoch

    def load_resume(self) -> None:
        """Take the resume file's state where it holds this config's run; a file for another
        config is ignored and a damaged one reported; either way the run starts from epoch 1."""
        if not self.resume_path or not os.path.exists(self.resume_path):
            return
        try:
            state = checkpoints.load(self.resume_path)
            if not same_config(state.get("config"), self.config):
                logs.problem(f"{self.desc}: ignoring {self.resume_path}, written for a different config")
                return
            epoch, history = int(state["epoch"]), dict(state["history"])
            if not all(len(history[k]) == epoch for k in ("loss", "train_acc", "val_acc")) or \
                    not {"model", "optimizer", "scaler", "rng"} <= state.keys():
                raise checkpoints.CheckpointError(f"{self.resume_path} is damaged (its parts do not fit together)")
        except (checkpoints.CheckpointError, KeyError, TypeError, ValueError) as err:
            logs.problem(f"{self.desc}: cannot resume: {logs.shorten(str(err).splitlines()[0], 200)}; "
                         f"starting this run from epoch 1")
            return
        timing = {key: history.pop(key, []) for key in TIMINGS}
        best = state.get("best")
        if best is not None:
            self.best = {**best, "model": state["model"] if best["model"] is None else best["model"]}
        self.history = {k: list(history[k]) for k in ("loss", "train_acc", "val_acc")}
        # a resume file holds the timings of the epochs before the one it saved
        self.timing = {key: t + [None] * (epoch - len(t)) for key, t in timing.items()}
        self.state = state
        logs.info(f"{self.desc}: resuming from epoch {epoch + 1} of {self.config['epochs']} ({self.resume_path})")

    @property
    def epoch(self) -> int:
        return len(self.history["loss"])

    def finish(self, record: dict, on_finish=None) -> None:
        """Keep the run's record and hand it to on_finish(index, record) at once."""
        self.outcome = record
        if on_finish:
            on_finish(self.index, record)

    def note_validation(self, val_acc: float, group: "Group", j: int) -> None:
        """Keep a copy of the weights of the best validation epoch so far (the first of equals)."""
        if self.best is None or val_acc > self.best["val_acc"]:
            self.best = {"epoch": self.epoch, "val_acc": val_acc, "model": group.model.member_state_dict(j)}

    def resume_best(self) -> dict | None:
        """The best epoch for a resume file; its weights only where they are not the current ones."""
        if self.best is None:
            return None
        return {**self.best, "model": None if self.best["epoch"] == self.epoch else self.best["model"]}

    def record(self, started: float, model_state: dict, test_acc=None, test_acc_at_best=None) -> dict:
        """test_acc: the last epoch's weights; test_acc_at_best: the best validation epoch's."""
        return {"status": self.status, "history": self.history, "timing": self.timing, "test_acc": test_acc,
                "best_val_acc": max(self.history["val_acc"], default=None),
                "best_epoch": self.best["epoch"] if self.best else None, "test_acc_at_best": test_acc_at_best,
                "epochs_completed": self.epoch, "train_seconds": round(time.perf_counter() - started, 2),
                "kernels": self.kernels, "model": model_state,
                "best_model": self.best["model"] if self.best else None}


def train_run(config: dict, split: Split, num_classes: int, resume_path: str | None = None,
              desc: str = "run") -> dict:
    """Train one AlexNet on split as config says: train_group with one member."""
    return train_group([config], split, num_classes, [resume_path], [desc])[0]


def train_group(configs: list, split: Split, num_classes: int, resume_paths: list | None = None,
                descs: list | None = None, on_finish=None, on_epoch=None) -> list:
    """Train the runs of configs (alike but for MEMBER_KEYS) at once on split; returns each
    run's record: status ("completed" or "diverged"), history, timing (per epoch: seconds
    of training, evaluation and checkpointing, and training images/s of the whole group),
    test_acc, best_val_acc, and its trained AlexNet state_dict under "model".
    on_finish(i, record) is called as soon as run i has finished (a diverged run leaves the
    group at the end of that epoch). on_epoch(i, history, timing) is called with run i's history
    when it starts or resumes and after each of its epochs. Runs resumed from different epochs
    train in turn."""
    shared = [{k: v for k, v in c.items() if k not in MEMBER_KEYS} for c in configs]
    assert all(same_config(s, shared[0]) for s in shared), "runs of one group may differ only in MEMBER_KEYS"
    descs = descs or [f"run {i}" for i in range(len(configs))]
    resume_paths = resume_paths or [None] * len(configs)
    members = [Member(c, d, r, i) for i, (c, d, r) in enumerate(zip(configs, descs, resume_paths))]
    for m in members:
        m.load_resume()
        if on_epoch:
            on_epoch(m.index, m.history, m.timing)
    # grouped by the epoch each resumes from before any trains: a run that diverges stays at its epoch
    cohorts = [[m for m in members if m.epoch == epoch] for epoch in sorted({m.epoch for m in members})]
    for cohort in cohorts:
        train_together(cohort, split, num_classes, on_finish, on_epoch)
    return [m.outcome for m in members]


class ActiveGroup:
    """The members still training together, the fused Group that holds them, and the step
    that trains it; rebuilt without the members that leave."""

    def __init__(self, members: list, split: Split, num_classes: int):
        self.members, self.split = members, split
        self.config = members[0].config  # what every member shares
        self.precision = self.config["precision"]
        self.group = Group([m.config for m in members], num_classes, split.train.device,
                           [m.state for m in members] if members[0].state else None)
        for m in members:
            m.state = None  # the group holds it now
        self._prepare()

    def seeds(self) -> list:
        return [m.config["seed"] for m in self.members]

    def _prepare(self) -> None:
        """Choose the group's kernels on its first batch (each member notes the choice) and
        build its step, DDP- and compile-wrapped as the config asks."""
        x = None
        if self.group.k > 1:
            x, _ = next(group_batches(self.split.train, self.seeds(), self.members[0].epoch))
        chosen = self.group.choose_kernels(x, self.precision, self.config.get("kernels", "auto"),
                                           self.split.kernel_choices)
        for m in self.members:
            m.kernels = chosen
        self.step_model, self.step = _prepared(self.group, self.config, self.split.train.device,
                                               self.split.world_size, self.precision)

    def without(self, leaving: set) -> None:
        """Go on without the members in leaving: their weights leave with them, the others go
        on unchanged. With none left, nothing is rebuilt."""
        self.members = [m for j, m in enumerate(self.members) if j not in leaving]
        if not self.members:
            return
        self.step_model = self.step = None  # they hold the old group's model, which Group.without frees
        self.group = self.group.without(leaving)
        self._prepare()


def train_together(members: list, split: Split, num_classes: int, on_finish=None, on_epoch=None) -> None:
    """Train members, all resumed at (or starting from) the same epoch, as one fused group up to
    their last epoch: each epoch trains, lets the diverged runs leave, validates, notes, and
    saves resume files when due. Each member finishes (Member.finish) as it diverges or completes."""
    config, started = members[0].config, time.perf_counter()
    active = ActiveGroup(members, split, num_classes)
    show_bar = sys.stderr.isatty() and split.rank == 0
    images = max(len(split.train.indices), 1)  # every process's share, together
    label = members[0].desc if len(members) == 1 else f"{len(members)} runs"
    last_saved = time.perf_counter()
    for epoch in range(members[0].epoch, config["epochs"]):
        tick = time.perf_counter()
        totals = train_one_epoch(active.step, active.step_model, split.train, active.seeds(), epoch,
                                 f"{label} epoch {epoch + 1}/{config['epochs']}", show_bar)
        train_seconds = time.perf_counter() - tick  # the .tolist() above waited for the device
        totals = leave_diverged(active, totals, images, epoch, started, on_finish)
        if not active.members:
            return
        tick = time.perf_counter()
        train_accs, val_accs = accuracies(active, totals, images)
        eval_seconds = time.perf_counter() - tick
        losses = [loss / images for loss, _ in totals]
        note_epoch(active, losses, train_accs, val_accs, epoch, len(active.members) * images / train_seconds)
        tick = time.perf_counter()
        if checkpoint_due(config, epoch, tick - last_saved) and split.rank == 0:
            save_resume_files(active.group, active.members, epoch + 1)
            last_saved = time.perf_counter()
        note_timing(active.members, dict(train_seconds=train_seconds,
                                         images_per_s=len(active.members) * images / train_seconds,
                                         eval_seconds=eval_seconds, checkpoint_seconds=time.perf_counter() - tick))
        for m in active.members if on_epoch else ():
            on_epoch(m.index, m.history, m.timing)
    finish_completed(active, started, on_finish)


def leave_diverged(active: ActiveGroup, totals: list, images: int, epoch: int, started: float, on_finish) -> list:
    """Finish as diverged the members whose loss is not finite or whose fp16 gradients kept
    overflowing, and go on without them; returns the totals of the members that go on."""
    leaving = {j for j, (loss, _) in enumerate(totals) if not math.isfinite(loss / images)}
    overflowing = active.group.overflowing() - leaving
    for j in sorted(leaving | overflowing):
        m = active.members[j]
        m.status = "diverged"
        logs.info(f"{m.desc}: " + (f"loss is {totals[j][0] / images}" if j in leaving else
                                   f"fp16 gradients overflowed until the loss scale fell below {MIN_LOSS_SCALE}")
                  + f" in epoch {epoch + 1}; stopping this run as diverged")
        m.finish(m.record(started, active.group.model.member_state_dict(j)), on_finish)
    leaving |= overflowing
    if leaving:
        active.without(leaving)
    return [t for j, t in enumerate(totals) if j not in leaving]


def accuracies(active: ActiveGroup, totals: list, images: int) -> tuple:
    """(each member's training accuracy: counted on the epoch's batches, or a second pass in
    eval mode where train_acc says "eval"; each member's validation accuracy)."""
    split, model, precision = active.split, active.step_model, active.precision
    train_accs = ([correct / images for _, correct in totals] if active.config["train_acc"] == "epoch"
                  else evaluate(model, split.train_eval, precision))
    return train_accs, evaluate(model, split.val, precision)


def note_epoch(active: ActiveGroup, losses: list, train_accs: list, val_accs: list, epoch: int,
               images_per_s: float) -> None:
    """Each member's loss and accuracies of the epoch into its history, its best epoch so far,
    and one line of log each."""
    runs, epochs = len(active.members), active.config["epochs"]
    for j, (m, loss, train_acc, val_acc) in enumerate(zip(active.members, losses, train_accs, val_accs)):
        m.history["loss"].append(loss)
        m.history["train_acc"].append(train_acc)
        m.history["val_acc"].append(val_acc)
        m.note_validation(val_acc, active.group, j)
        logs.info(f"{m.desc} epoch {epoch + 1}/{epochs}: loss {loss:.4f}  train_acc {train_acc:.4f}  "
                  f"val_acc {val_acc:.4f}  ({images_per_s:.0f} images/s" + (f" for {runs} runs)" if runs > 1 else ")"))


def checkpoint_due(config: dict, epoch: int, since_saved: float) -> bool:
    """Whether epoch (0-based, just trained) ends with resume files: not the last epoch, a
    multiple of checkpoint_every, and checkpoint_seconds since the last were saved."""
    return (epoch + 1 < config["epochs"] and (epoch + 1) % config["checkpoint_every"] == 0
            and since_saved >= config["checkpoint_seconds"])


def note_timing(members: list, timing: dict) -> None:
    """The epoch's timings (TIMINGS) into each member's record."""
    for m in members:
        for key in TIMINGS:
            m.timing[key].append(round(timing[key], 4))


def finish_completed(active: ActiveGroup, started: float, on_finish) -> None:
    """Finish each member that trained to its last epoch, with the test accuracy of its last
    weights and of its best validation epoch's."""
    finals = [active.group.model.member_state_dict(j) for j in range(len(active.members))]
    test_accs, at_best = final_accuracies(active.group, active.members, active.step_model, active.split.test,
                                          active.precision)
    for j, m in enumerate(active.members):
        m.finish(m.record(started, finals[j], test_accs[j], at_best[j]), on_finish)


def trial_images_per_s(configs: list, split: Split, num_classes: int, warmup: int = 2, steps: int = 3) -> float:
    """Training images/s of configs fused as one group, timed over steps real training steps
    of split's batches after warmup untimed ones (kernels chosen first, as training does).
    Nothing is saved; the caller's runs start afresh."""
    device, precision = split.train.device, configs[0]["precision"]
    group, run_steps = Group(configs, num_classes, device), None
    try:
        batches = endless_group_batches(split.train, [c["seed"] for c in configs])
        group.choose_kernels(next(batches)[0], precision, configs[0].get("kernels", "auto"), split.kernel_choices)
        run_steps = functools.partial(train_steps, group.make_step(precision), batches,
                                      world_size=split.train.world_size)
        group.model.train()
        run_steps(warmup)
        rate = images_per_s(run_steps, steps, device)
        evaluation_forward(group.model, split, precision)
        return rate
    finally:
        del group, run_steps  # the step holds the group too
        release_memory()


def evaluation_forward(model: torch.nn.Module, split: Split, precision: str) -> None:
    """One evaluation forward beside the group as training holds it, untimed: a K that trains
    but cannot evaluate runs out of memory here, not after its first epoch."""
    loader = next((l for l in (split.val, split.test, split.train_eval) if len(l.indices)), None)
    if loader is not None:
        with torch.inference_mode():
            forwards = eval_forwards(model, loader, precision)
            next(forwards)
            forwards.close()


def save_resume_files(group: Group, members: list, epoch: int) -> None:
    """Each member's resume file after epoch epochs (member j of the group is members[j])."""
    for j, m in enumerate(members):
        if m.resume_path:
            checkpoints.save({**checkpoints.resume_state(group.member_state(j), epoch, {**m.history, **m.timing},
                                                         m.config), "best": m.resume_best()}, m.resume_path)


def final_accuracies(group: Group, members: list, step_model, loader: DeviceLoader, precision: str) -> tuple:
    """(test accuracy of each member's last weights, of its best validation epoch's weights).
    Where the best epoch came earlier, its weights replace the last ones in the group."""
    last = evaluate(step_model, loader, precision)
    earlier = [j for j, m in enumerate(members) if m.best["epoch"] < m.epoch]
    if not earlier:
        return last, list(last)
    with torch.no_grad():
        for j in earlier:
            for view, saved in zip(group.model.member_tensors(j).values(), members[j].best["model"].values()):
                view.copy_(saved)
    best = evaluate(step_model, loader, precision)
    return last, [best[j] if j in earlier else last[j] for j in range(len(members))]


def _prepared(group: Group, config: dict, device, world: int, precision: str):
    """The module a step runs (DDP- and compile-wrapped as config asks) and the step."""
    step_model = group.model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        step_model = DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None)
    if config["compile"]:
        step_model = torch.compile(step_model)
    return step_model, group.make_step(precision, step_model)
