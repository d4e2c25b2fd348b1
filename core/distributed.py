"""Waiting for the other processes that torchrun started."""
import time

import torch.distributed as dist


def wait_for_ranks(name: str, world: int, poll: float = 1.0) -> None:
    """Wait until every rank has called this with this name. Unlike dist.barrier(), no timeout:
    with --strategy spread one rank may finish its share hours before another, and a barrier
    would end it after the process group's timeout (NCCL's watchdog: 10 minutes). Each rank
    counts itself in the store that torchrun's rendezvous set up; a count returns at once."""
    store = dist.distributed_c10d._get_default_store()
    key = f"alexnet-ablations/{name}"
    store.add(key, 1)
    while store.add(key, 0) < world:
        time.sleep(poll)
