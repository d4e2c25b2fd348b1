"""The disk budget of a sweep: what it will write under --out/models (checkpoint files and
resume files, from the model's real parameter count and its optimizers' real state) beside
the free space there, checked before any data loads."""
import os
import shutil

import torch

from core import checkpoints
from core import logs
from core.fuse_k import MAX_AUTO_FUSE
from core.optimizers import make_optimizer
from core.results import same_config

OVERHEAD_BYTES = 256 * 1024  # a checkpoint's pickled config, history, names and zip headers, at most
KNOWN_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion-mnist": 10}  # imagefolder: counted as 10


def size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def optimizer_state_tensors(name: str) -> int:
    """How many tensors of a parameter's size the optimizer keeps per parameter (Adam: 2),
    found by taking one step on a small parameter, not from a table."""
    param = torch.nn.Parameter(torch.ones(64))
    param.grad = torch.ones(64)
    optimizer = make_optimizer(name, [param], 1e-3)
    optimizer.step()
    return sum(1 for t in optimizer.state[param].values() if torch.is_tensor(t) and t.numel() == 64)


def final_bytes(params: int) -> int:
    """Size of one finished run's checkpoint file (<run>.pt or <run>.best.pt) of a model of
    params parameters."""
    return 4 * params + OVERHEAD_BYTES


def resume_bytes(params: int, optimizer: str, with_best: bool = False) -> int:
    """Size of a run's resume file: its model's params weights and its optimizer's state in
    fp32, and where its best epoch came before the saved one, those weights too."""
    copies = 1 + optimizer_state_tensors(optimizer) + (1 if with_best else 0)
    return 4 * params * copies + OVERHEAD_BYTES


def writes_resume(config: dict, start: int = 0) -> bool:
    """Whether a run of config, from epoch start, can still write a resume file: only after an
    epoch that is not its last and is a multiple of checkpoint_every (train._train_group's `due`).
    --checkpoint-seconds only delays it, by epoch times no estimate knows beforehand."""
    every = config["checkpoint_every"]
    return (start // every + 1) * every < config["epochs"]


def resume_epochs(models_dir: str, jobs: list) -> dict:
    """{stem: the epochs its run's resume file holds} for each job (0 if none, unreadable or of
    another config): each file read once, for planning only; training reads it again whole."""
    epochs = {}
    for job in jobs:
        path = checkpoints.resume_path(models_dir, job.stem)
        epochs[job.stem] = 0
        if not os.path.exists(path):
            continue
        try:
            state = checkpoints.load(path, mmap=True)  # reads only what it touches
            epochs[job.stem] = int(state["epoch"]) if same_config(state.get("config"), job.config) else 0
        except (checkpoints.CheckpointError, KeyError, TypeError, ValueError):
            pass
    return epochs


def disk_needs(pending: list, base: dict, starts: dict, fuse, folder: str, parameter_count) -> dict | None:
    """What training pending, the runs left, will write in folder: {"pending", "file", "files",
    "resume", "k", "low", "high", "folder"}; None when nothing is left to train. starts: {stem:
    the epoch each run goes on from}; parameter_count(image_size, classes): the model's. Only
    what can be written counts: no second checkpoint where a run has one epoch (its best is its
    last), no resume file where no epoch but the last is left to a run (writes_resume)."""
    if not pending:
        return None
    classes = KNOWN_CLASSES.get(base["dataset"], 10)
    files = {"both": 2, "last": 1, "best": 1, "none": 0}[base["save"]]
    if all(job.config["epochs"] == 1 for job in pending):
        files = min(files, 1)
    resuming = [job for job in pending if writes_resume(job.config, starts[job.stem])]
    k = min(len(resuming), MAX_AUTO_FUSE if fuse == "auto" else fuse)
    resume = max((resume_bytes(parameter_count(job.config["image_size"], classes), job.config["optimizer"],
                               with_best=True) for job in resuming), default=0)
    file = final_bytes(parameter_count(base["image_size"], classes))
    return {"pending": len(pending), "file": file, "files": files, "resume": resume, "k": k,
            "low": len(pending) * min(files, 1) * file + min(k, 1) * resume,  # best = last everywhere; one resume file
            "high": len(pending) * files * file + k * resume, "folder": folder}


def check_disk(needs: dict | None, save: str, no_disk_check: bool) -> str | None:
    """Print what the sweep will write (needs, of disk_needs) beside the free space of its
    filesystem; return one sentence where even the least it can write does not fit (unless
    --no-disk-check); warn where only the most does not."""
    if needs is None:
        return None
    existing = os.path.abspath(needs["folder"])
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    both = " (one file where the best epoch is the last)" if needs["files"] == 2 else ""
    logs.info(f"disk: this sweep writes up to {size(needs['high'])} in {needs['folder']}: {needs['pending']} run(s) "
              f"x {needs['files']} checkpoint file(s) of {size(needs['file'])} (--save {save}){both}, and "
              + (f"up to {needs['k']} resume file(s) of up to {size(needs['resume'])} alive at once" if needs["k"]
                 else "no resume file (one is written only after an epoch that is not a run's last)")
              + f"; {size(free)} free there")
    if needs["low"] > free and not no_disk_check:
        return (f"{existing} has {size(free)} free, and this sweep needs at least {size(needs['low'])} there "
                f"({size(needs['high'])} at most); free some space, choose another --out, keep less with --save, "
                f"or pass --no-disk-check to train anyway")
    if needs["low"] <= free < needs["high"]:  # it may fit (best epochs last, few resume files at once) or not
        logs.problem(f"warning: {existing} has {size(free)} free, less than the {size(needs['high'])} this sweep "
                     f"may write (it needs at least {size(needs['low'])}); it goes on, but may run out of space "
                     f"before it ends: keep less with --save or free some space to be sure")
    return None
