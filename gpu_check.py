"""One prepared GPU check: measures, in under 8 minutes on one GPU, every figure the
README states about GPUs, and writes them where the README quotes them from.

    python gpu_check.py --data-dir /usr/share/datasets/fashion-mnist
    python gpu_check.py --tiny --device cpu --data-dir DIR   # the same steps at a tiny size (the test)

1. bench.py's step mode for K = 1, 2, 4, ... up to 16 or the first K that runs out of
   memory: images/s, TFLOPS, share of peak, and the kernel form each layer chose;
2. one whole sweep at paper scale (main_activation.py: 5 runs, 25 epochs, 9,000 / 1,000
   Fashion-MNIST images at 227 px) with --fuse auto: the K it chose with the table it
   timed, its wall time and its all-in training images/s.

Writes results/gpu_check.json (under --out): the device, its capability, torch and
cuDNN, the commit, each command with its figures. Both steps run as their own
processes, so each starts with the whole device memory.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.abspath(__file__))


def run(command: list, timeout: float | None) -> tuple:
    """(exit code, seconds, stdout) of a command run from the repository root; its output
    is echoed as it comes. A command still running after `timeout` seconds is killed (exit
    code negative); None waits as long as it takes (--tiny: a loaded machine must not fail it)."""
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
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
        proc.kill()
        proc.wait()
        print(f"  (stopped after {timeout:.0f} s)", flush=True)
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
    import train
    device = train.resolve_device(device_name)
    facts = {"device": str(device), "torch": torch.__version__,
             "precision_auto": train.resolve_precision("auto", device)}
    if device.type == "cuda":
        facts.update(name=torch.cuda.get_device_name(device),
                     capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                     memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
                     cudnn=torch.backends.cudnn.version())
    return facts


def main(argv=None) -> int:
    import data
    import storage
    import train
    from sweep import OneLineParser
    p = OneLineParser(prog="gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                   help="Fashion-MNIST's four IDX files (default: Debian's dataset-fashion-mnist)")
    p.add_argument("--device", default="auto", help="auto, cuda, cpu (default: auto)")
    p.add_argument("--out", default=ROOT, type=storage.out_folder,
                   help="root for results/gpu_check.json (default: the repository root)")
    p.add_argument("--tiny", action="store_true", help="67 px, a few images and steps: the whole check in seconds")
    args = p.parse_args(argv)
    # each check here would otherwise fail only after minutes of measuring
    try:
        train.usable_device(args.device, touch=False)
    except ValueError as err:
        p.error(f"argument --device: {err}")
    try:
        storage.check_writable(os.path.join(args.out, "results"))
    except storage.WriteError as err:
        p.error(f"argument --out: {err}")
    try:  # the sweep would fall back to Debian's copy where --data-dir lacks the data, unsaid in the figures
        data.check_found_in(data.load_dataset("fashion-mnist", args.data_dir, download=False), args.data_dir)
    except data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    facts = device_facts(args.device)
    print(f"gpu_check on {facts.get('name', facts['device'])}, torch {facts['torch']}, "
          f"--precision auto = {facts['precision_auto']}", flush=True)
    result = {**facts, "commit": commit(), "tiny": args.tiny, "steps": {}}
    with tempfile.TemporaryDirectory() as scratch:
        bench_json = os.path.join(scratch, "bench.json")
        size = ["--image-size", "67", "--steps", "1", "--rounds", "1", "--warmup", "0", "--images", "64",
                "--batch-size", "16"] \
            if args.tiny else ["--steps", "10", "--rounds", "3"]
        fuse = ["1", "2"] if args.tiny else ["1", "2", "4", "8", "16"]
        command = ["bench.py", "--device", args.device, *size, "--fuse", *fuse, "--json", bench_json]
        code, seconds, _ = run(command, timeout=None if args.tiny else 240)
        result["steps"]["bench"] = {"command": "python " + " ".join(command[:-2]), "exit": code,
                                    "seconds": round(seconds, 1),
                                    "figures": json.load(open(bench_json)) if code == 0 else None}

        out = os.path.join(scratch, "sweep")
        scale = ["--image-size", "67", "--train-size", "32", "--val-size", "16", "--test-size", "16", "--epochs", "1",
                 "--values", "relu", "tanh"] if args.tiny else []
        command = ["main_activation.py", "--dataset", "fashion-mnist", "--data-dir", args.data_dir, "--device",
                   args.device, "--fuse", "auto", *scale, "--out", out]
        code, seconds, printed = run(command, timeout=None if args.tiny else 420)
        sweep = {"command": "python " + " ".join(command[:-2]), "exit": code, "wall_seconds": round(seconds, 1)}
        if code == 0:
            runs = json.load(open(os.path.join(out, "results", "activation.json")))["runs"]
            per_epoch = int(re.search(r"(\d+) train / \d+ val", printed).group(1))  # the sweep's first line
            images = sum(r["epochs_completed"] for r in runs) * per_epoch
            sweep.update(runs=len(runs), training_images=images, images_per_s_all_in=round(images / seconds, 1),
                         fuse=runs[0]["trained_on"].get("fuse"),
                         groups=sorted({len(r["fused_with"]) + 1 for r in runs}),
                         test_acc={r["name"]: r["test_acc"] for r in runs})
        result["steps"]["sweep"] = sweep
    path = os.path.join(args.out, "results", "gpu_check.json")
    storage.atomic_write_text(path, json.dumps(result, indent=1))
    print(f"\nfigures written to {path}")
    failed = [name for name, step in result["steps"].items() if step["exit"] != 0]
    if failed:
        print(f"error: {', '.join(failed)} did not finish; see the output above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
