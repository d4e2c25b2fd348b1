"""--fuse auto: how many runs train at once as one fused model, chosen by timing candidate K
on a few real steps of the sweep's own runs and shapes (HFTA's way: a dry run, not a
formula). The steps are the caller's: it passes them in as a function."""
import os

import torch

from core import logs
from core.device import fits

MAX_AUTO_FUSE = 16
FUSE_MARGIN = 1.05    # --fuse auto takes a K above 1 only where it trains this much faster than K = 1
SEARCH_SHARE = 0.03   # ... and times candidates only where that costs at most this share of the sweep's images
TRIAL_WARMUP, TRIAL_STEPS = 2, 3  # steps per candidate K: untimed (cuDNN's autotuner settles), then timed


def run_bytes(config: dict, params: int) -> int:
    """Memory one fused run of a model of params parameters needs, estimated: fp32 weights,
    gradients and two optimizer states (16 bytes per parameter); training activations, about
    1.2 M values per image at 227 px held for the backward pass, 8 bytes each; evaluation at
    batch 512, where only conv1's output and its activation (290,400 values each at 227 px,
    bf16) are alive at once. About 2.1 GB per run at 227 px. Only an upper bound for the
    candidates of --fuse auto: the timed steps find what really fits."""
    area = (config["image_size"] / 227) ** 2
    return int(16 * params + 1.2e6 * area * 8 * config["batch_size"] + 2 * 290_400 * area * 2 * 512)


def free_memory(device) -> int:
    """Bytes free for training: the CUDA device's, else the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fuse_candidates(runs: int, bound: int) -> list:
    """1, 2, 4, ... up to the number of runs and the memory bound."""
    limit = max(1, min(runs, bound, MAX_AUTO_FUSE))
    return [2 ** i for i in range(limit.bit_length())]  # the powers of two up to limit


def measure_fuse(candidates: list, measure) -> dict:
    """{K: training images/s} of measure(K) for each candidate in turn; an out-of-memory error
    ends the search there (that K: None)."""
    table = {}
    for k in candidates:
        table[k], fitted = fits(measure, k)
        if not fitted:
            break
    return table


def pick_fuse(table: dict, margin: float = FUSE_MARGIN) -> int:
    """The K with the most images/s, where it beats K = 1 by margin; else 1."""
    timed = {k: v for k, v in table.items() if v}
    best = max(timed, key=lambda k: (timed[k], -k))
    return best if best == 1 or timed[best] >= margin * timed.get(1, 0) else 1


def choose_fuse(spec, jobs: list, base: dict, device, ddp: bool, swept: int, params: int, trial) -> tuple:
    """(K, how it was chosen) for --fuse spec: as given, or for auto by timing candidate K on
    trial(the first K jobs' configs, warmup steps, timed steps) -> training images/s. swept:
    the images the sweep has left to train; params: the model's parameter count."""
    if spec != "auto":
        return spec, {"how": f"--fuse {spec}"}
    if ddp:
        return 1, {"how": "--strategy ddp trains one run at a time"}
    candidates = fuse_candidates(len(jobs), free_memory(device) * 9 // 10 // run_bytes(base, params))
    if len(candidates) == 1:
        return 1, {"how": "auto: one run to train, or room for one" if len(jobs) > 1 else "auto: one run to train"}
    # each candidate's steps, and for K > 1 about two steps' worth of timing the kernels' forms
    searched = sum((TRIAL_WARMUP + TRIAL_STEPS + (2 if k > 1 else 0)) * k * base["batch_size"] for k in candidates)
    if searched > SEARCH_SHARE * swept:
        logs.info(f"--fuse auto: timing K = {', '.join(map(str, candidates))} would cost {100 * searched / swept:.0f}% "
                  f"of this sweep's training, more than {100 * SEARCH_SHARE:.0f}%; training one run at a time "
                  f"(--fuse K fuses K runs)")
        return 1, {"how": f"auto: sweep too small to time candidates ({100 * searched / swept:.0f}% of its "
                          f"training), one run at a time"}
    logs.info(f"--fuse auto: timing K = {', '.join(map(str, candidates))} on {TRIAL_STEPS} steps each of this "
              f"sweep's runs ({100 * searched / swept:.1f}% of its training)")
    table = measure_fuse(candidates, lambda k: trial([job.config for job in jobs[:k]], TRIAL_WARMUP, TRIAL_STEPS))
    k = pick_fuse(table)
    logs.info(timing_table(table) + f"\n--fuse auto: K = {k}"
              + ("" if k > 1 else f" (no K above 1 trained {100 * (FUSE_MARGIN - 1):.0f}% faster)"))
    return k, {"how": f"auto: timed, the most images/s (another K only where {FUSE_MARGIN:.2f}x K = 1)",
               "measured": [{"k": key, "images_per_s": ips} for key, ips in table.items()], "chosen": k}


def timing_table(table: dict) -> str:
    """Each K's training images/s, and how many times K = 1's."""
    lines = ["   K  training images/s  vs K = 1"]
    for key, ips in table.items():
        lines.append(f"  {key:2d}  " + ("out of memory" if ips is None else f"{ips:17.1f}  {ips / table[1]:7.2f}x"))
    return "\n".join(lines)
