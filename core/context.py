"""What the stages of one sweep read: the Context, fixed before the first stage runs, and
the Training, fixed once the data is loaded and K chosen. Stages take them as arguments;
none of them changes either."""
import argparse
import os
import socket
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Context:
    """What the stages of one sweep read, fixed before the first of them runs."""
    experiment: str
    args: argparse.Namespace
    base: dict            # the settings every run starts from, its device and precision resolved
    device: torch.device
    order: list           # the settings' names, in the order results list them
    everything: list      # the plan: every (setting, seed) run, every shard's
    tunes: dict | None    # --tune-lr: {run name: its tuning info}
    models_dir: str
    rank: int
    world: int

    @property
    def ddp(self) -> bool:
        return self.world > 1 and self.args.strategy == "ddp"

    @property
    def lead(self) -> bool:
        """Whether this process writes its runs' files (under --strategy ddp, rank 0 alone)."""
        return self.rank == 0 or not self.ddp


@dataclass(frozen=True)
class Training:
    """What the training stages read besides the Context: the data (a data.Dataset and its
    train.Split), how a record names where and how its run was trained, and the TensorBoard
    runs this process writes (--tensorboard; under ddp rank 0's), or None."""
    dataset: object
    split: object
    trained_on: dict
    board: object = None


def trained_on(ctx: Context) -> dict:
    """Where and how this process trains, as each record keeps it."""
    args = ctx.args
    # threads: on a CPU their number changes the arithmetic of a step (bf16 and fp32 alike), so two
    # trainings of one config and seed agree bit for bit only with as many threads
    return {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
            "rank": ctx.rank, "world_size": ctx.world,
            "strategy": args.strategy if ctx.world > 1 else None, "device": str(ctx.device),
            "shard": f"{args.shard[0]}/{args.shard[1]}" if args.shard else None}
