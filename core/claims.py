"""Sharing one --out between processes: which runs this process trains (it holds their
claims, and no other process has finished them), --fresh's removal of resume files, and
--forget-pending's edit of the plan, made only while no other process sweeps it."""
import os

import torch.distributed as dist

from core import checkpoints
from core import logs
from core import storage
from core.context import Context
from core.plan import Job
from core.recording import remove_left_behind
from core.results import finished, forget_pending, read_results


def latest_records(out: str, experiment: str) -> dict:
    """{(name, seed): the run's record} of every run recorded on --out."""
    return {(r["name"], r["seed"]): r for r in read_results(out, experiment)["runs"]}


def claim_runs(ctx: Context, jobs: list, claims: list) -> list:
    """The jobs to train here: those whose claim the lead process takes (appending it to claims)
    and that no other process finished meanwhile; under ddp every rank takes rank 0's choice."""
    take = []
    if ctx.lead:
        latest = {} if ctx.args.fresh else latest_records(ctx.args.out, ctx.experiment)
        take = [take_run(ctx, job, latest, claims) for job in jobs]
    if ctx.ddp:  # every rank trains what rank 0 decided
        shared = [take]
        dist.broadcast_object_list(shared, src=0)
        take = shared[0]
    return [job for job, taken in zip(jobs, take) if taken]


def take_run(ctx: Context, job: Job, latest: dict, claims: list) -> bool:
    """Whether this process trains job: it holds the run's claim, and the run is not finished."""
    claim = storage.Claim(os.path.join(ctx.models_dir, f".{job.stem}.lock"))
    if not claim.acquire():
        logs.info(f"{job.desc}: being trained by another process on this --out; skipped here")
        return False
    claims.append(claim)
    remove_left_behind(ctx.experiment, ctx.args.out, ctx.models_dir, job.name, job.config["seed"], job.stem,
                       job.desc)
    if finished(latest.get((job.name, job.config["seed"])), job.config):
        logs.info(f"{job.desc}: finished meanwhile by another process; skipping")
        return False
    return True


def start_afresh(ctx: Context, jobs: list) -> None:
    """With --fresh, jobs' resume files go before any rank looks for them."""
    if ctx.args.fresh and ctx.lead:
        for job in jobs:
            path = checkpoints.resume_path(ctx.models_dir, job.stem)
            if os.path.exists(path):
                os.remove(path)
    if ctx.ddp:
        dist.barrier()  # no rank may look for a resume file before it is gone


def drop_pending(ctx: Context, asked: set, present) -> bool:
    """--forget-pending: drop from the plan the pending runs not in asked, unless another process
    sweeps this experiment on this --out; returns whether they were dropped."""
    with present.alone() as alone:  # no other sweep of it under way, and none starts meanwhile
        dropped = forget_pending(ctx.args.out, ctx.experiment, asked) if alone else []
    if not alone:
        logs.problem(f"--forget-pending: another process is sweeping {ctx.experiment} on this --out, and the pending "
                     "runs may be its own; nothing dropped from the plan: run this command again once it ends")
    else:
        logs.info(f"--forget-pending: dropped {len(dropped)} pending run(s) that this command does not ask for "
                  f"from the plan of {ctx.experiment}" + (f": {', '.join(dropped)}" if dropped else ""))
    return alone
