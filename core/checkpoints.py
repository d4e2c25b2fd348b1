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
