"""One prepared GPU check: runs, on one GPU (two for one step), every path that only a GPU can
show, measures every figure the docs state about GPUs, and writes them where the docs quote them
from.

    python gpu_check.py --data-dir /usr/share/datasets/fashion-mnist
    python gpu_check.py --tiny --device cpu --data-dir DIR   # the same steps at a tiny size (the test)

Each step is its own process (so each starts with the whole device memory) under its own time
limit (LIMITS, seconds; none with --tiny), and is recorded with its exit code and figures:

1. bench: bench.py's step mode for K = 1, 2, 4, ... up to 16 or the first K that runs out of
   memory: images/s, TFLOPS, share of peak, and the kernel form each layer chose;
2. sweep: main_activation.py at paper scale (5 runs, 25 epochs, 9,000 / 1,000 Fashion-MNIST
   images at 227 px) with --fuse auto: the K it chose with the table it timed, its wall time and
   all-in training images/s. On a slow GPU it trains fewer epochs: as many as bench's K = 1 rate
   trains in SWEEP_TRAINING_S seconds (recorded);
3. out_of_memory: 16 runs forced into one group at a batch where the estimate (core.fuse_k.run_bytes)
   of each is a quarter of the device: the sweep must split the group ("going on as") and
   finish every run. CUDA only;
4. largest_k: runs fused at the largest K bench timed, each evaluating 1,024 validation and
   1,024 test images;
5. spread: torchrun on 2 GPUs, --strategy spread, 3 runs one at a time: one GPU trains two runs
   while the other, done after one, waits for it. Only where 2 or more GPUs are visible;
6. adagrad: main_optimizer.py --values adagrad (torch accepts fused Adagrad for CUDA parameters
   and fails at its first step);
7. compile: one run of main_dropout.py at p 0.5 with --compile, two epochs (it recompiles
   after evaluation); on a CPU with torch.compile's eager backend (inductor compiles C++ there
   for minutes).

Steps 3, 4, 6 and 7 train a few batches (--tiny: a few images at 67 px): their outcome is the
point, not their figures.

Writes results/gpu_check.json (under --out): the device, its capability, torch and cuDNN, the
commit, each step's command, exit code, seconds, limit and figures, or why it was skipped.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
LIMITS = {"bench": 240, "sweep": 420, "out_of_memory": 300, "largest_k": 240, "spread": 420, "adagrad": 180,
          "compile": 420}  # seconds per step: 37 minutes in all at most
SWEEP_TRAINING_S = 120  # the paper-scale sweep trains at most this long at bench's K = 1 rate
PAPER_EPOCHS, PAPER_IMAGES, PAPER_RUNS = 25, 9000, 5


def run(command: list, timeout: float | None) -> tuple:
    """(exit code, seconds, stdout) of a command run from the repository root; its output
    is echoed as it comes. A command still running after `timeout` seconds is killed (exit
    code negative); None waits as long as it takes (--tiny: a loaded machine must not fail it)."""
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    # its own process group, so that the limit ends torchrun's workers too
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines = []

    def echo():  # in a thread: reading the output to its end would block past the time limit
        for line in proc.stdout:
            print("  " + line, end="", flush=True)
            lines.append(line)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"  (stopped after {timeout:.0f} s)", flush=True)
    except BaseException:  # Ctrl-C reaches only this process: end the step's too
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    reader.join()
    return proc.returncode, time.perf_counter() - start, "".join(lines)


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def device_facts(device_name: str) -> dict:
    import torch
    from core.device import resolve_device, resolve_precision
    device = resolve_device(device_name)
    facts = {"device": str(device), "torch": torch.__version__,
             "precision_auto": resolve_precision("auto", device)}
    if device.type == "cuda":
        facts.update(name=torch.cuda.get_device_name(device),
                     capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                     memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
                     cudnn=torch.backends.cudnn.version(), gpus=torch.cuda.device_count())
    return facts


def out_of_memory_batch(memory_bytes: float, image_size: int = 227) -> int:
    """The training batch at which one run's estimated memory (core.fuse_k.run_bytes, an upper
    bound) is a quarter of the device's: one run fits, 16 fused need 4 times the device."""
    import alexnet
    from core.fuse_k import run_bytes
    params = alexnet.parameter_count(image_size, 10)
    fixed = run_bytes({"image_size": image_size, "batch_size": 0}, params)
    per_image = run_bytes({"image_size": image_size, "batch_size": 1}, params) - fixed
    return max(16, int((memory_bytes / 4 - fixed) / per_image))


def paper_epochs(bench_figures: dict | None) -> tuple:
    """(epochs of the paper-scale sweep, why): the study's 25, or as many as bench's K = 1
    rate trains in SWEEP_TRAINING_S seconds on a slower device (at least 1)."""
    rows = [row for row in (bench_figures or {}).get("ours", []) if row["fuse"] == 1 and row.get("images_per_s")]
    if not rows:
        return 5, "bench gave no K = 1 rate: 5 epochs"
    rate = rows[0]["images_per_s"]
    fit = int(SWEEP_TRAINING_S * rate / (PAPER_RUNS * PAPER_IMAGES))
    if fit >= PAPER_EPOCHS:
        return PAPER_EPOCHS, "the study's"
    return max(1, fit), (f"bench's K = 1 rate, {rate:.0f} images/s, trains {max(1, fit)} epochs of the sweep in "
                         f"{SWEEP_TRAINING_S} s")


def runs_of(out: str, experiment: str) -> list:
    with open(os.path.join(out, "results", f"{experiment}.json")) as f:
        return json.load(f)["runs"]


def group_sizes(runs: list) -> list:
    return sorted(len(r["fused_with"]) + 1 for r in runs)


class Steps:
    """The check's steps as they run: each command under its limit (none with --tiny), each
    sweep writing into its own folder under scratch, each record in records by name."""

    def __init__(self, args, scratch: str):
        self.args, self.scratch, self.records = args, scratch, {}

    def run(self, name: str, command: list, shown: list | None = None) -> tuple:
        """Run one step under its limit; (exit code, seconds, output), its record begun."""
        limit = None if self.args.tiny else LIMITS[name]
        code, seconds, printed = run(command, timeout=limit)
        self.records[name] = {"command": "python " + " ".join(shown or command), "exit": code,
                              "seconds": round(seconds, 1), "limit_s": limit}
        return code, seconds, printed

    def check(self, name: str, problem: str | None) -> None:
        """Note what went wrong in a step that exited 0."""
        if problem and self.records[name]["exit"] == 0:
            self.records[name]["problem"] = problem

    def skip(self, name: str, why: str) -> None:
        self.records[name] = {"skipped": why}

    def sweep_command(self, script: str, name: str, *flags) -> list:
        return [script, "--dataset", "fashion-mnist", "--data-dir", self.args.data_dir, "--device", self.args.device,
                *flags, "--out", self.out(name)]

    def out(self, name: str) -> str:
        return os.path.join(self.scratch, name)

    def small(self) -> list:
        """A run of a few batches: what the GPU-only steps need, not figures."""
        return (["--image-size", "67", "--train-size", "16", "--batch-size", "16", "--val-size", "16",
                 "--test-size", "16", "--epochs", "1"] if self.args.tiny else
                ["--train-size", "1024", "--val-size", "512", "--test-size", "512", "--epochs", "2"])


def bench_step(steps: Steps) -> dict | None:
    """1. bench.py's step mode for K = 1, 2, 4, ...: its figures, or None where it failed."""
    bench_json = os.path.join(steps.scratch, "bench.json")
    # --tiny: grouped kernels (timing each layer's two forms is slow on a CPU; tests/test_fusion.py does)
    size = ["--image-size", "67", "--steps", "1", "--rounds", "1", "--warmup", "0", "--images", "64",
            "--batch-size", "16", "--kernels", "grouped"] if steps.args.tiny else ["--steps", "10", "--rounds", "3"]
    fuse = ["1", "2"] if steps.args.tiny else ["1", "2", "4", "8", "16"]
    command = ["bench.py", "--device", steps.args.device, *size, "--fuse", *fuse, "--json", bench_json]
    code, _, _ = steps.run("bench", command, command[:-2])
    figures = json.load(open(bench_json)) if code == 0 else None
    steps.records["bench"]["figures"] = figures
    return figures


def sweep_step(steps: Steps, figures: dict | None) -> None:
    """2. the paper-scale sweep with --fuse auto, fewer epochs on a slow device."""
    epochs, why = (1, "--tiny") if steps.args.tiny else paper_epochs(figures)
    scale = ["--image-size", "67", "--train-size", "32", "--val-size", "16", "--test-size", "16",
             "--values", "relu", "tanh"] if steps.args.tiny else []
    command = steps.sweep_command("main_activation.py", "sweep", "--fuse", "auto", *scale, "--epochs", str(epochs))
    code, seconds, printed = steps.run("sweep", command, command[:-2])
    sweep = steps.records["sweep"]
    sweep.update(wall_seconds=sweep.pop("seconds"), epochs=epochs, epochs_why=why)
    if code == 0:
        runs = runs_of(steps.out("sweep"), "activation")
        per_epoch = int(re.search(r"(\d+) train / \d+ val", printed).group(1))  # the sweep's first line
        images = sum(r["epochs_completed"] for r in runs) * per_epoch
        sweep.update(runs=len(runs), training_images=images, images_per_s_all_in=round(images / seconds, 1),
                     fuse=runs[0]["trained_on"].get("fuse"), groups=sorted(set(group_sizes(runs))),
                     test_acc={r["name"]: r["test_acc"] for r in runs})


def out_of_memory_step(steps: Steps, facts: dict) -> None:
    """3. out of memory for real: 16 runs in one group that cannot fit, split until they do."""
    if not facts["device"].startswith("cuda"):
        steps.skip("out_of_memory", "needs a CUDA device: a CPU runs out of memory only by exhausting the "
                                    "machine; tests/test_gpu_paths.py splits on a raised error")
        return
    batch = out_of_memory_batch(facts["memory_gib"] * 2**30)  # at 227 px, --tiny too: memory is the point
    command = steps.sweep_command("main_learning_rate.py", "oom", "--values", "1e-4", "--seeds", "16", "--fuse",
                                  "16", "--regime", "full", "--batch-size", str(batch), "--train-size", str(batch),
                                  "--val-size", "512", "--test-size", "512", "--epochs", "1", "--save", "none")
    code, _, printed = steps.run("out_of_memory", command, command[:-2])
    steps.records["out_of_memory"]["batch_size"] = batch
    if code == 0:
        runs = runs_of(steps.out("oom"), "learning_rate")
        steps.records["out_of_memory"].update(splits=printed.count("going on as"), groups=group_sizes(runs),
                                              completed=sum(r["status"] == "completed" for r in runs))
        steps.check("out_of_memory", "16 runs fitted in one group: no split was tried"
                    if "going on as" not in printed else
                    None if all(r["status"] == "completed" for r in runs) else "not every run completed")


def largest_k_step(steps: Steps, figures: dict | None) -> None:
    """4. evaluation at the largest K bench timed."""
    largest = max((row["fuse"] for row in (figures or {}).get("ours", []) if row.get("images_per_s")),
                  default=None)
    if largest is None:
        steps.skip("largest_k", "bench timed no K")
        return
    # --tiny: grouped kernels, as bench's
    eval_sizes = [*steps.small(), "--kernels", "grouped"] if steps.args.tiny else [
        "--train-size", "128", "--val-size", "1024", "--test-size", "1024", "--epochs", "1"]
    command = steps.sweep_command("main_learning_rate.py", "largest_k", "--values", "1e-4", "--seeds", str(largest),
                                  "--fuse", str(largest), "--save", "none", *eval_sizes)
    code, _, _ = steps.run("largest_k", command, command[:-2])
    steps.records["largest_k"]["k"] = largest
    if code == 0:
        runs = runs_of(steps.out("largest_k"), "learning_rate")
        steps.records["largest_k"].update(groups=group_sizes(runs), kernels=runs[0]["kernels"], eval_seconds=max(
            r["timing"]["eval_seconds"][0] for r in runs), test_acc=[r["test_acc"] for r in runs])
        steps.check("largest_k", None if all(r["status"] == "completed" for r in runs) else "not every run completed")


def spread_step(steps: Steps, facts: dict, figures: dict | None) -> None:
    """5. spread over 2 GPUs, one done a run's time before the other."""
    if not facts["device"].startswith("cuda") or facts.get("gpus", 0) < 2:
        steps.skip("spread", f"needs 2 CUDA devices; {facts.get('gpus', 0)} visible")
        return
    spread_epochs = 1 if steps.args.tiny else paper_epochs(figures)[0]
    command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *steps.sweep_command("main_learning_rate.py", "spread", "--values", "1e-5", "1e-4", "1e-3",
                                    "--strategy", "spread", "--fuse", "1", "--save", "none",
                                    *(["--image-size", "67", "--train-size", "16", "--val-size", "16",
                                       "--test-size", "16"] if steps.args.tiny else
                                      ["--train-size", str(PAPER_IMAGES), "--val-size", "1000"]),
                                    "--epochs", str(spread_epochs))]
    code, _, _ = steps.run("spread", command, ["-m", "torch.distributed.run", *command[2:-2]])
    if code == 0:
        runs = runs_of(steps.out("spread"), "learning_rate")
        by_device = {}
        for r in runs:
            device = r["trained_on"]["device"]
            by_device[device] = round(by_device.get(device, 0) + r["train_seconds"], 1)
        steps.records["spread"].update(train_seconds_by_device=by_device,
                                       waited_s=round(max(by_device.values()) - min(by_device.values()), 1))
        steps.check("spread", None if len(runs) == 3 and all(r["status"] == "completed" for r in runs) else
                    "not every run completed")


def adagrad_step(steps: Steps) -> None:
    """6. Adagrad on the device (torch accepts fused Adagrad for CUDA parameters)."""
    command = steps.sweep_command("main_optimizer.py", "adagrad", "--values", "adagrad", "--save", "none",
                                  *steps.small())
    code, _, _ = steps.run("adagrad", command, command[:-2])
    if code == 0:
        run_record = runs_of(steps.out("adagrad"), "optimizer")[0]
        steps.records["adagrad"].update(status=run_record["status"], loss=run_record["history"]["loss"],
                                        test_acc=run_record["test_acc"])
        steps.check("adagrad", None if run_record["status"] != "failed" else run_record.get("error", "failed"))


def compile_step(steps: Steps, facts: dict) -> None:
    """7. --compile: inductor on a GPU; torch.compile's eager backend on a CPU."""
    command = steps.sweep_command("main_dropout.py", "compile", "--values", "0.5", "--compile", "--fuse", "1",
                                  "--save", "none", *steps.small())
    eager = not facts["device"].startswith("cuda")
    code, _, _ = steps.run("compile", ["-c", EAGER_COMPILE, *command] if eager else command, command[:-2])
    steps.records["compile"]["backend"] = "eager" if eager else "inductor"
    if code == 0:
        run_record = runs_of(steps.out("compile"), "dropout")[0]
        steps.records["compile"].update(status=run_record["status"], dropout=run_record["config"]["dropout"],
                                        train_seconds=run_record["timing"]["train_seconds"],
                                        test_acc=run_record["test_acc"])
        steps.check("compile", None if run_record["status"] == "completed" else "the run did not complete")


def parse_args(argv):
    """The flags, with --device, --out and the data checked: each check here would otherwise
    fail only after minutes of measuring. Exits 2 with one sentence on a bad flag."""
    from core import device as devices
    from core import storage
    from core.flags import OneLineParser
    p = OneLineParser(prog="gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                   help="Fashion-MNIST's four IDX files (default: Debian's dataset-fashion-mnist)")
    p.add_argument("--device", default="auto", help="auto, cuda, cpu (default: auto)")
    p.add_argument("--out", default=ROOT, type=storage.out_folder,
                   help="root for results/gpu_check.json (default: the repository root)")
    p.add_argument("--tiny", action="store_true", help="67 px, a few images and steps: the whole check in seconds")
    args = p.parse_args(argv)
    try:
        devices.usable_device(args.device, touch=False)
    except ValueError as err:
        p.error(f"argument --device: {err}")
    try:
        storage.check_writable(os.path.join(args.out, "results"))
    except storage.WriteError as err:
        p.error(f"argument --out: {err}")
    return args


def report(result: dict, out: str) -> int:
    """Write results/gpu_check.json under out; say what was skipped and what did not pass (exit 1)."""
    from core import storage
    path = os.path.join(out, "results", "gpu_check.json")
    storage.atomic_write_text(path, json.dumps(result, indent=1))
    print(f"\nfigures written to {path}")
    steps = result["steps"]
    skipped = [f"{name} ({s['skipped']})" for name, s in steps.items() if "skipped" in s]
    if skipped:
        print("skipped: " + "; ".join(skipped))
    failed = [name + (f" ({s['problem']})" if "problem" in s else "") for name, s in steps.items()
              if "skipped" not in s and (s["exit"] != 0 or "problem" in s)]
    if failed:
        print(f"error: {', '.join(failed)} did not pass; see the output above", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    import data
    args = parse_args(argv)
    try:  # the sweep would fall back to Debian's copy where --data-dir lacks the data, unsaid in the figures
        data.check_found_in(data.load_dataset("fashion-mnist", args.data_dir, download=False), args.data_dir)
    except data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    facts = device_facts(args.device)
    print(f"gpu_check on {facts.get('name', facts['device'])}, torch {facts['torch']}, "
          f"--precision auto = {facts['precision_auto']}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        steps = Steps(args, scratch)
        figures = bench_step(steps)
        sweep_step(steps, figures)
        out_of_memory_step(steps, facts)
        largest_k_step(steps, figures)
        spread_step(steps, facts, figures)
        adagrad_step(steps)
        compile_step(steps, facts)
    return report({**facts, "commit": commit(), "tiny": args.tiny, "steps": steps.records}, args.out)


# The compile step on a CPU: the script run with torch.compile's eager backend
EAGER_COMPILE = ("import functools, runpy, sys, torch; "
                 "torch.compile = functools.partial(torch.compile, backend='eager'); "
                 "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


if __name__ == "__main__":
    sys.exit(main())
