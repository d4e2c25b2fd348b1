"""Training throughput, timed one way for bench.py and for --fuse auto's trial steps: the
images of a number of training steps over the seconds between two points where the device
has finished its queued work (so the clock counts the device's work, not the host's queueing)."""
import time

import torch

from core.kernels import synchronize


def train_steps(step, batches, steps: int, world_size: int = 1) -> int:
    """steps calls of a fused group's step (train.Group.make_step) on the next (x, y) of the
    iterator batches, each weighted to its own batch's mean; returns the images they held,
    every member's."""
    images = 0
    for _ in range(steps):
        x, y = next(batches)
        step(x, y, world_size / y.shape[1])
        images += y.numel()
    return images


def images_per_s(run_steps, steps: int, device: torch.device) -> float:
    """Images per second of run_steps(steps), a callable that trains that many steps on device
    and returns the images they held."""
    synchronize(device)
    start = time.perf_counter()
    images = run_steps(steps)
    synchronize(device)
    return images / (time.perf_counter() - start)
