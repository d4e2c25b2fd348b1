"""Checkpoints: one schema of plain dicts, written atomically, read with
weights_only.

models/<experiment>/<run>.pt, a finished run's last weights:
    {"model": AlexNet state_dict, "config", "history", "test_acc", "best_val_acc",
     "status", "experiment", "name", "num_classes", "classes"}
    and "epoch" (the epochs it trained)
models/<experiment>/<run>.best.pt, the same run's weights at its best validation
    epoch, in the same schema, with "epoch" and "test_acc" of those weights; where the
    best epoch is the last, the two files are one (a hard link), not two copies
(--save keeps both, the last, the best or neither; each run's record lists its files)
models/<experiment>/<run>.resume.pt, an unfinished run after its last saved epoch:
    {"model", "optimizer", "scaler", "epoch", "history", "rng", "config", "best"}
    ("rng": {"dropout": the run's own dropout generator's state}; nothing else draws
    from a generator once a run has been initialised)
    ("best": the best validation epoch so far, its weights unless they are "model")
    (a run trained in a fused group has its own, in the same schema: its AlexNet
    state_dict, its optimizer's state over AlexNet.parameters(), its dropout RNG)

Both load anywhere with torch.load(path, weights_only=True, map_location="cpu").
"""
import os

import torch

from core.logs import shorten
from core.optimizers import make_optimizer
from core.storage import atomic_write


class CheckpointError(Exception):
    """A checkpoint could not be read; the message is one sentence naming the file."""


def final_path(models_dir: str, stem: str) -> str:
    return os.path.join(models_dir, f"{stem}.pt")


def best_path(models_dir: str, stem: str) -> str:
    return os.path.join(models_dir, f"{stem}.best.pt")


def resume_path(models_dir: str, stem: str) -> str:
    return os.path.join(models_dir, f"{stem}.resume.pt")


def link_or_copy(source: str, path: str) -> None:
    """path becomes the same file as source (a hard link, replacing path atomically): no
    second copy on disk. Where the filesystem has no hard links, a copy, written atomically."""
    import shutil
    from core.storage import WriteError, describe, ensure_folder, temporary_name
    ensure_folder(os.path.dirname(path) or ".")
    tmp = temporary_name(path)
    try:
        os.link(source, tmp)
    except OSError:
        atomic_write(path, lambda f: shutil.copyfileobj(open(source, "rb"), f))
        return
    try:
        os.replace(tmp, path)
    except OSError as err:
        os.remove(tmp)
        raise WriteError(f"could not write {path} ({describe(err)}); the previous file, if any, is unchanged") from None


# ---------------------------------------------------------------------------
# Sizes, for the disk check before a sweep

OVERHEAD_BYTES = 256 * 1024  # a checkpoint's pickled config, history, names and zip headers, at most


def parameter_count(image_size: int, num_classes: int) -> int:
    """AlexNet's parameters at this input size (counted on the meta device: no memory)."""
    from alexnet import AlexNet
    with torch.device("meta"):
        return sum(p.numel() for p in AlexNet(num_classes, image_size=image_size).parameters())


def optimizer_state_tensors(name: str) -> int:
    """How many tensors of a parameter's size the optimizer keeps per parameter (Adam: 2),
    found by taking one step on a small parameter, not from a table."""
    param = torch.nn.Parameter(torch.ones(64))
    param.grad = torch.ones(64)
    optimizer = make_optimizer(name, [param], 1e-3)
    optimizer.step()
    return sum(1 for t in optimizer.state[param].values() if torch.is_tensor(t) and t.numel() == 64)


def final_bytes(config: dict, num_classes: int) -> int:
    """Size of one finished run's checkpoint file (<run>.pt or <run>.best.pt)."""
    return 4 * parameter_count(config["image_size"], num_classes) + OVERHEAD_BYTES


def resume_bytes(config: dict, num_classes: int, with_best: bool = False) -> int:
    """Size of a run's resume file: its weights and optimizer state in fp32, and where its best
    epoch came before the saved one, those weights too."""
    params = parameter_count(config["image_size"], num_classes)
    copies = 1 + optimizer_state_tensors(config["optimizer"]) + (1 if with_best else 0)
    return 4 * params * copies + OVERHEAD_BYTES


def save(state: dict, path: str) -> None:
    """Write state to path atomically (storage.atomic_write); WriteError if it cannot be."""
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: str, mmap: bool = False) -> dict:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except Exception as err:  # torch reports damage as RuntimeError, pickle or zip errors
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({shorten(reason, 120)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a checkpoint of this repository (not a dict)")
    return state


def final_state(model_state: dict, record: dict, experiment: str, num_classes: int, classes: list) -> dict:
    return {"model": model_state, "config": record["config"], "history": record["history"],
            "test_acc": record["test_acc"], "best_val_acc": record["best_val_acc"],
            "status": record["status"], "experiment": experiment, "name": record["name"],
            "num_classes": num_classes, "classes": [str(c) for c in classes], "run_id": record.get("run_id")}


def resume_state(member_state: dict, epoch: int, history: dict, config: dict) -> dict:
    """member_state: train.Group.member_state's model, optimizer, scaler and dropout rng."""
    return {**member_state, "epoch": epoch, "history": history, "config": config}
