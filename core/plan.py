"""A sweep's plan, as pure functions: its (setting, seed) runs, --tune-lr's runs at every rate,
the shares of --shard and of torchrun's processes, what is left to train, and the groups
that train fused."""
from dataclasses import dataclass

from core.results import finished, fmt


@dataclass
class Job:
    """One (setting, seed) run of a sweep."""
    name: str
    params: dict
    config: dict
    stem: str  # file name of its checkpoints
    desc: str  # how the log names it
    tune: dict | None = None  # --tune-lr: {"setting", "own_lr", "params", "grid"}


def plan(sweep: list, base: dict, seeds: int, tunes: dict | None = None) -> list:
    """Every (setting, seed) run of sweep, [(name, params)], with --tune-lr's tuning info
    (tunes: {run name: info}) where given."""
    jobs = []
    for name, params in sweep:
        for k in range(seeds):
            config = {**base, **params, "seed": base["seed"] + k}
            jobs.append(Job(name, params, config, name if seeds == 1 else f"{name}_seed{config['seed']}",
                            name if seeds == 1 else f"{name} seed {config['seed']}", (tunes or {}).get(name)))
    return jobs


def repeated_run(jobs: list) -> str | None:
    """Why jobs, an expanded plan, cannot be trained as it stands: two of its runs with one name and
    seed (or one checkpoint stem), which would share one record and one set of checkpoints, the
    later overwriting the earlier; None where every run has its own."""
    seen = set()
    for job in jobs:
        for key in ((job.name, job.config["seed"]), ("stem", job.stem)):
            if key in seen:
                return (f"the sweep would train run {job.name!r} seed {job.config['seed']} twice, one overwriting "
                        "the other's record and checkpoints; give its settings names of their own")
            seen.add(key)
    return None


def tuned_sweep(sweep: list, base: dict, grid: list) -> tuple:
    """(the runs of --tune-lr: every setting at every rate of grid, {run name: its tune info}).
    The run at a setting's own rate keeps the setting's name, so a finished plain sweep's run
    is reused; the others are named <setting>_at_lr<rate>. ValueError for a bad grid."""
    kinds = {kind for kind, _ in grid}
    if len(kinds) > 1:
        raise ValueError("mixes rates and multiples (x...); give either rates (1e-4 3e-4) or multiples (x0.3 x1 x3)")
    labels = [("x" if kind == "x" else "") + fmt(value) for kind, value in grid]
    runs, tunes = [], {}
    for name, params in sweep:
        own = params.get("lr", base["lr"])
        rates = [(own if value == 1 else float(f"{value * own:.6g}")) if kind == "x" else value
                 for kind, value in grid]
        shown = [fmt(rate) for rate in rates]  # as names, tables and plots print them
        if len(set(rates)) < len(rates):
            raise ValueError(f"gives setting {name!r} the same rate twice ({', '.join(shown)})")
        if len(set(shown)) < len(shown):
            raise ValueError(f"gives setting {name!r} rates that print alike ({', '.join(shown)}), whose runs "
                             "would share one name; make each rate differ within its first 6 significant digits")
        near_own = [rate for rate in rates if rate != own and fmt(rate) == fmt(own)]
        if near_own:
            raise ValueError(f"gives setting {name!r} the rate {near_own[0]!r}, which prints as its own rate "
                             f"{fmt(own)} but is not it; give {fmt(own)} itself or a rate that differs within "
                             "its first 6 significant digits")
        for rate in rates:
            run = name if rate == own else f"{name}_at_lr{fmt(rate)}"
            runs.append((run, {**params, "lr": rate}))
            tunes[run] = {"setting": name, "own_lr": own, "params": params, "grid": labels}
    return runs, tunes


def my_shard(jobs: list, shard) -> list:
    """The I-th of N shares of jobs (--shard I/N): every N-th, from the I-th; all where shard is None."""
    return jobs if not shard else jobs[shard[0] - 1::shard[1]]


def split_finished(jobs: list, recorded: dict) -> tuple:
    """(jobs still to train, [(job, its record)] of those already finished in recorded,
    {(name, seed): record}; with --fresh it is empty, and every job is still to train)."""
    pending, done = [], []
    for job in jobs:
        old = recorded.get((job.name, job.config["seed"]))
        if finished(old, job.config):
            done.append((job, old))
        else:
            pending.append(job)
    return pending, done


def assign(jobs: list, world: int, cost) -> list:
    """jobs split over world processes: the costliest first, each to the least loaded
    (ties to the lowest rank); deterministic, so every process computes the same."""
    loads, shares = [0.0] * world, [[] for _ in range(world)]
    for job in sorted(jobs, key=cost, reverse=True):
        r = min(range(world), key=lambda i: (loads[i], i))
        loads[r] += cost(job)
        shares[r].append(job)
    return shares


def make_groups(jobs: list, k: int, epochs: dict) -> list:
    """jobs in groups of at most k that train together: runs resumed from the same epoch
    (epochs: {stem: the epoch its resume file holds}), in as few groups as possible, of sizes
    as even as possible, in sweep order."""
    if k == 1:
        return [[job] for job in jobs]
    by_epoch = {}
    for job in jobs:
        by_epoch.setdefault(epochs[job.stem], []).append(job)
    groups = []
    for bucket in by_epoch.values():
        n = -(-len(bucket) // k)  # ceil
        size, extra = divmod(len(bucket), n)
        start = 0
        for i in range(n):
            end = start + size + (1 if i < extra else 0)
            groups.append(bucket[start:end])
            start = end
    return groups
