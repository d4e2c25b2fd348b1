"""What every main_<ablation>.py shares: the command line, the sweep over its
settings, results files, checkpoints, plots and the final table.

A script declares its ablation (core.ablation.Ablation: its name, its swept
values and how each becomes a run, the settings it holds fixed) and calls
main(). Everything else is here, as stages run in order: plan (core.plan),
check (the flags, the device, the disk: core.disk), choose K (core.fuse_k),
then for each group of runs claim (core.claims), train (halving the group on
out of memory) and record (core.recording), and finish (results file, plots,
table: core.summary). What the stages read is in core.context.
"""
import functools
import gc
import os
import signal
import uuid

import torch.distributed as dist

import data
import plotting
import train
from alexnet import MIN_IMAGE_SIZE, parameter_count
from core import checkpoints
from core import logs
from core import storage
from core import tensorboard
from core.claims import claim_runs, drop_pending, latest_records, start_afresh
from core.context import Context, Training, trained_on
from core.device import out_of_memory, out_of_memory_message, release_memory, resolved, training_device, tune_backends
from core.distributed import wait_for_ranks
from core.disk import check_disk, disk_needs, resume_epochs
from core.flags import Options, add_parallel_flags, build_parser, check_flags, check_out, resolve_config, settings_of
from core.flags import parse_number  # noqa: F401 (the scripts' sweep.parse_number)
from core.fuse_k import choose_fuse
from core.recording import record_run
from core.plan import Job, assign, make_groups, my_shard, plan, repeated_run, split_finished, tuned_sweep
from core.results import ResultsError, add_to_plan, listed, run_key, sweeping_path, write_results
from core.summary import log_start, show_results
from train import DEFAULTS, KERNELS, PRECISIONS, SAVE_CHOICES, TRAIN_ACC_MODES

ROOT = os.path.dirname(os.path.abspath(__file__))
OPTIONS = Options(defaults=DEFAULTS, datasets=data.DATASETS, regimes=data.REGIMES, precisions=PRECISIONS,
                  kernels=KERNELS, saves=SAVE_CHOICES, train_acc_modes=TRAIN_ACC_MODES,
                  smallest_image=MIN_IMAGE_SIZE, root=ROOT)


# ---------------------------------------------------------------------------
# The command line: plan and check

def main(ablation, argv=None) -> int:
    """Parse the command line, train every (setting, seed) of the ablation (a script's
    core.ablation.Ablation) not yet complete, and leave checkpoints, results, plots and a
    table. Returns the exit code. A script with flags of its own adds them with its
    add_flags(parser); its prepare(args) may then return the make_run to use."""
    if not gc.get_freeze_count():  # what the imports made (torch: half a million objects, none of them
        gc.freeze()  # garbage) is left out of every later collection, which would walk it all again and again
    with storage.interrupts_as_exceptions():
        try:
            a = ablation
            return _main(a.name, a.doc, a.values, a.make_run, a.settings, a.values_help, argv, a.add_flags, a.prepare,
                         a.tune_lr)
        except KeyboardInterrupt as err:
            how = " by SIGTERM" if getattr(err, "signum", None) == signal.SIGTERM else ""
            logs.problem(f"\ninterrupted{how}: finished runs and epochs are saved; run the same command "
                         "again to resume")
            return storage.exit_code_of(err)


def _main(experiment, doc, values, make_run, settings, values_help, argv, add_flags, prepare, tune_lr) -> int:
    parser = build_parser(experiment, doc, values, settings, values_help, OPTIONS, tune_lr)
    add_parallel_flags(parser)
    if add_flags:
        add_flags(parser)
    args = parser.parse_args(argv)
    sweep = settings_of(parser, args, values, make_run, prepare)
    base = resolve_config(args, settings, DEFAULTS)
    tunes = None
    if tune_lr and args.tune_lr:  # the flag exists where the rate is not what the sweep varies
        try:
            sweep, tunes = tuned_sweep(sweep, base, args.tune_lr)
        except ValueError as err:
            parser.error(f"argument --tune-lr: {err}")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # processes torchrun started
    check_flags(parser, args, sweep, base, world)
    try:
        device = training_device(base["device"], world)
    except ValueError as err:
        parser.error(f"argument --device: {err}")
    base = resolved(base, device, world)  # before any stage reads it
    jobs = plan(sweep, base, args.seeds, tunes)
    repeated = repeated_run(jobs)
    if repeated:
        parser.error(f"argument {'--tune-lr' if tunes else '--values'}: {repeated}")
    check_out(parser, args.out, experiment)
    try:
        return run_sweep(experiment, sweep, base, args, device, jobs, tunes)
    except (storage.WriteError, ResultsError) as err:
        logs.problem(f"error: {err}. Finished runs are kept; fix this, then run the same command again to resume")
        return 1


# ---------------------------------------------------------------------------
# The sweep: check the disk, load the data, choose K, train, finish

def run_sweep(experiment: str, sweep: list, base: dict, args, device, everything: list, tunes) -> int:
    """Train this process's share of the plan everything (its runs not yet finished), with
    the disk checked and the data loaded first; under torchrun, in its process group."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    logs.configure(quiet=rank != 0, prefix=f"[rank {rank}] " if world > 1 else "")
    ctx = Context(experiment, args, base, device, [name for name, _ in sweep], everything, tunes,
                  os.path.join(args.out, "models", experiment), rank, world)
    jobs = my_shard(everything, args.shard)
    if not jobs:  # nothing to train, record or plot
        runs = len(sweep) * args.seeds
        logs.info(f"shard {args.shard[0]}/{args.shard[1]} of this sweep has no runs: the sweep has only {runs} "
                  f"(setting, seed) run(s); use at most {runs} shard(s)")
        return 0
    pending, done = split_finished(jobs, {} if args.fresh else latest_records(args.out, experiment))
    epochs = resume_epochs(ctx.models_dir, pending)  # each resume file read once, here
    starts = dict.fromkeys(epochs, 0) if args.fresh else epochs
    problem = check_disk(disk_needs(pending, base, starts, args.fuse, ctx.models_dir, parameter_count),
                         base["save"], args.no_disk_check)
    if problem:
        logs.problem(f"error: {problem}")
        return 1
    try:
        dataset = data.load_dataset(base["dataset"], base["data_dir"], base["image_size"])
        indices = data.split_indices(len(dataset.train_labels), base["regime"], base["train_size"], base["val_size"])
    except data.DataError as err:
        logs.problem(f"error: {err}")
        return 1
    with storage.Presence(sweeping_path(args.out, experiment)) as present:  # while it plans and trains
        if world > 1 and not dist.is_initialized():
            # spread does no tensor collectives, and its ranks wait for each other's uneven shares
            # (wait_for_ranks): gloo, whose process has no watchdog to end it, is enough
            dist.init_process_group("nccl" if ctx.ddp and device.type == "cuda" else "gloo")
            try:
                return _sweep(ctx, jobs, pending, done, epochs, dataset, indices, present)
            finally:
                dist.destroy_process_group()
        return _sweep(ctx, jobs, pending, done, epochs, dataset, indices, present)


def _sweep(ctx: Context, jobs: list, pending: list, done: list, epochs: dict, dataset, indices, present) -> int:
    """Choose K, then train and record this process's share of pending group by group; finish
    once every process has recorded its runs."""
    tune_backends(ctx.device)
    split = train.Split(dataset, *indices, ctx.base["test_size"], ctx.base["batch_size"], ctx.base["image_size"],
                        ctx.device, rank=ctx.rank if ctx.ddp else 0, world_size=ctx.world if ctx.ddp else 1)
    log_start(ctx, dataset, split, indices, done)
    if ctx.rank == 0:  # what this sweep sets out to train, so that readers can tell it from a finished one
        add_to_plan(ctx.args.out, ctx.experiment,
                    {run_key(j.name, j.config["seed"]): j.config for j in ctx.everything})
    mine = pending
    if ctx.world > 1 and not ctx.ddp:
        mine = assign(pending, ctx.world, lambda job: job.config["epochs"] - epochs[job.stem])[ctx.rank]
        wait_for_ranks("read", ctx.world)  # every rank has read the results before any rank writes
    swept = sum(job.config["epochs"] - epochs[job.stem] for job in mine) * len(split.train.indices)
    k, fuse_info = choose_fuse(ctx.args.fuse, mine, ctx.base, ctx.device, ctx.ddp, swept,
                               parameter_count(ctx.base["image_size"], 10),
                               lambda configs, warmup, steps: train.trial_images_per_s(
                                   configs, split, dataset.num_classes, warmup, steps))
    groups = make_groups(mine, k, epochs)
    if any(len(g) > 1 for g in groups):
        logs.info(f"fused: {' + '.join(str(len(g)) for g in groups)} runs at once (--fuse {ctx.args.fuse}"
                  + (f", {k} chosen" if ctx.args.fuse == "auto" else "") + ")")
    board = tensorboard.Board(ctx.args.out, ctx.experiment) if ctx.args.tensorboard and ctx.lead else None
    training = Training(dataset, split, {**trained_on(ctx), "fuse": fuse_info}, board)
    if board and ctx.rank == 0:  # the runs finished before this command, from their records
        tensorboard.write_results(ctx.args.out, {"experiment": ctx.experiment, "runs": [old for _, old in done]})
    failed = []
    try:
        for group in groups:
            statuses = train_jobs(ctx, training, group)
            failed += [job.desc for job, status in zip(group, statuses) if status == "failed"]
    finally:
        if board:
            board.close()
    present.release()  # trains nothing more: before the ranks wait for each other, so rank 0's finish may forget
    if ctx.ddp:
        dist.barrier()  # every run is recorded
    elif ctx.world > 1:
        wait_for_ranks("recorded", ctx.world)  # every run of every rank is recorded, however uneven the shares
    if ctx.rank != 0:
        return 1 if failed else 0
    return finish(ctx, jobs, failed, present)


# ---------------------------------------------------------------------------
# A group of runs: claim, train (halving on out of memory), record

def train_jobs(ctx: Context, training: Training, jobs: list) -> list:
    """Train jobs as one fused group (those that no other process holds or has finished
    since the sweep began) and record each run as soon as it finishes. Returns each job's
    status, or "skipped"."""
    claims = []
    try:
        taken = claim_runs(ctx, jobs, claims)
        statuses = dict.fromkeys((job.stem for job in jobs), "skipped")
        if taken:
            start_afresh(ctx, taken)
            train_part(ctx, training, taken, statuses)
        return [statuses[job.stem] for job in jobs]
    finally:
        for held in claims:
            held.release()


def train_part(ctx: Context, training: Training, part: list, statuses: dict) -> None:
    """Train the runs part as one group; out of memory splits it in two halves, each going on
    from its runs' last saved epochs."""
    halves = train_group(ctx, training, part, statuses)
    # Out of train_group's except block: the error's traceback held the frames of the failed
    # group's training (its weights, gradients, optimizer states, activations); only now can they go.
    release_memory()
    if halves:
        logs.info(f"out of memory with {sum(map(len, halves))} runs fused on {training.split.train.device}; going on "
                  f"as {len(halves[0])} + {len(halves[1])}, each run from its last saved epoch")
        for half in halves:
            train_part(ctx, training, half, statuses)


def train_group(ctx: Context, training: Training, part: list, statuses: dict) -> tuple | None:
    """Train part as one group, recording each run as it finishes; where the group fails,
    record its unfinished runs as failed, or where it ran out of memory with more than one
    unfinished run, return the two halves to train instead."""
    try:
        outcomes = train.train_group([job.config for job in part], training.split, training.dataset.num_classes,
                                     [checkpoints.resume_path(ctx.models_dir, job.stem) for job in part],
                                     [job.desc for job in part],
                                     on_finish=functools.partial(record_finished, ctx, training, part, statuses),
                                     **({"on_epoch": training.board.watcher(part)} if training.board else {}))
    except (KeyboardInterrupt, SystemExit, storage.WriteError):
        raise
    except Exception as err:  # one failing group must not end the sweep...
        if isinstance(err.__context__, KeyboardInterrupt):  # Ctrl-C surfacing inside torch's C++ code
            raise storage.Interrupted() from None
        if ctx.ddp:  # ...except data-parallel, where the other ranks would wait on it forever:
            raise  # torchrun then stops them all, and a rerun resumes from the last epoch
        return failed_group(ctx, training, part, statuses, err)
    for job, outcome in zip(part, outcomes):  # runs the trainer returned without reporting them finished
        if statuses[job.stem] == "skipped" and outcome is not None:
            record(ctx, training, job, outcome, part, statuses)
    return None


def failed_group(ctx: Context, training: Training, part: list, statuses: dict, err: Exception) -> tuple | None:
    """The two halves of part's unfinished runs to train instead, where err is out of memory
    and more than one is left; else each of them recorded as failed, with err's message."""
    left = [job for job in part if statuses[job.stem] == "skipped"]
    message = f"{type(err).__name__}: {err}".strip()
    if out_of_memory(err) and len(left) > 1:
        half = (len(left) + 1) // 2
        return left[:half], left[half:]
    if out_of_memory(err):
        message = out_of_memory_message(message, left[0].config if left else {}, training.split.train.device)
    for job in left:
        logs.problem(f"{job.desc}: failed ({message.splitlines()[0]})")
        record(ctx, training, job, {"status": "failed", "error": message, "test_acc": None, "best_val_acc": None,
                                    "history": {"loss": [], "train_acc": [], "val_acc": []}, "epochs_completed": 0},
               part, statuses)
    return None


def record_finished(ctx: Context, training: Training, part: list, statuses: dict, i: int, outcome: dict) -> None:
    """The trainer's report that run i of the group part has finished."""
    record(ctx, training, part[i], outcome, part, statuses)


def record(ctx: Context, training: Training, job: Job, outcome: dict, part: list, statuses: dict) -> None:
    """Record job's run, trained in a group with the runs part, and note its status."""
    entry = {"name": job.name, "params": job.params, "seed": job.config["seed"], "config": job.config,
             **({"tune": job.tune} if job.tune else {})}
    state_dict, best_state = outcome.pop("model", None), outcome.pop("best_model", None)
    split = training.split
    entry.update(outcome, trained_on=training.trained_on, world_size=split.world_size,
                 fused_with=[run_key(other.name, other.config["seed"]) for other in part if other is not job],
                 classes=[str(c) for c in training.dataset.classes],
                 images={which: len(getattr(split, which).indices) for which in ("train", "val", "test")},
                 run_id=uuid.uuid4().hex)  # ties evaluations to this training's checkpoints
    if ctx.lead:
        with storage.interrupts_deferred():  # a finished run is recorded whole, even on Ctrl-C
            record_run(ctx.experiment, entry, state_dict, best_state, training.dataset, ctx.args.out, ctx.models_dir,
                       job.stem, ctx.order)
            if training.board:
                training.board.finished(job, entry)
    statuses[job.stem] = entry["status"]


# ---------------------------------------------------------------------------
# Finish: results file, plots, the table

def finish(ctx: Context, jobs: list, failed: list, present) -> int:
    """Results file, plots and the table of this sweep's runs (jobs), from what is recorded; a
    line on runs still pending in the plan that this command did not ask for (it asks for
    ctx.everything, every shard's), or with --forget-pending, those runs dropped from the plan."""
    args, experiment = ctx.args, ctx.experiment
    asked = {run_key(job.name, job.config["seed"]) for job in ctx.everything}
    forget_refused = False
    if args.forget_pending:  # before the results file is written, so that its progress counts without them
        forget_refused = not drop_pending(ctx, asked, present)
    results = write_results(args.out, experiment, ctx.order)
    plotting.plot_experiment(results, os.path.join(args.out, "images"))
    if args.tensorboard and "tuning" in results:  # each tuned run's setting's chosen rate, known only now
        tensorboard.write_results(args.out, results, {(job.name, job.config["seed"]) for job in jobs})
    show_results(results, {(job.name, job.config["seed"]) for job in jobs}, args.shard, args.out, experiment,
                 ctx.models_dir)
    pending = results["progress"]["pending"]
    others = [key for key in pending if key not in asked]
    if others and not forget_refused and not any(key in asked for key in pending):
        logs.info(f"\nevery run this command asks for is finished, but the plan of {experiment} on this --out still "
                  f"holds {len(others)} pending run(s) it does not ask for ({listed(others, 6)}), so the report and "
                  "--from-results count the sweep unfinished: run the command that asked for them again to train "
                  "them, or add --forget-pending to this one to drop them")
    if failed:
        logs.problem(f"failed runs: {', '.join(failed)}")
        return 1
    return 1 if forget_refused else 0
