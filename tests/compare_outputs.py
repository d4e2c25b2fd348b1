"""Behaviour unchanged? Train the same tiny sweeps at two revisions and compare what they wrote.

    .venv/bin/python tests/compare_outputs.py REV_BEFORE [REV_AFTER]   # REV_AFTER: the working tree

Each revision is exported with `git archive` into a temporary folder (removed afterwards) and
its scripts run there with this Python, by their command lines only, so the two revisions may
lay out their modules differently. Every command runs on the CPU in fp32 with fixed seeds, a
fixed K and fixed kernel forms, so that the same code writes the same bits. Compared: each
command's exit code and its stdout; the list of files it wrote; every field of every JSON and
CSV file under results/; every value of every checkpoint under models/ (torch.load
weights_only, map_location cpu), tensors bit for bit with torch.equal, through nested dicts and
lists. Exit code 0 only where nothing differs.

Ignored, because they differ between two runs of the same code:
  - keys "timing" (per-epoch seconds and images/s), "train_seconds", "images_per_s" and
    "seconds" (kernel timings): wall time;
  - keys "run_id" (a fresh uuid per training), "host" and "pid" (the machine and process);
  - in stdout, the images/s of each epoch line and the free space of the disk line;
  - the temporary folders' own paths, written as <out> and <src> before comparing;
  - the order of keys in JSON objects, and the bytes of images (only their presence counts).
"""
import argparse
import csv
import difflib
import json
import math
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "fashion-mnist", "--data-dir", "/usr/share/datasets/fashion-mnist", "--image-size", "67",
        "--train-size", "64", "--val-size", "32", "--test-size", "32", "--batch-size", "32", "--epochs", "2",
        "--seed", "0", "--device", "cpu", "--precision", "fp32", "--checkpoint-seconds", "0"]
COMMANDS = {  # name: the script and its flags; the README's quick start, shrunk, then two fused groups
    "quick_start": ["main_activation.py", "--quick", *TINY, "--fuse", "1"],
    "fused_grouped": ["main_learning_rate.py", "--values", "1e-4", "1e-3", "--fuse", "2", "--kernels", "grouped",
                      *TINY],
    "fused_split": ["main_dropout.py", "--values", "0.25", "0.4", "--fuse", "2", "--kernels", "split", *TINY],
}
IGNORED_KEYS = {"timing", "train_seconds", "images_per_s", "seconds", "run_id", "host", "pid"}
STDOUT_NOISE = [(re.compile(r"\(\d+ images/s"), "(N images/s"), (re.compile(r"[\d.]+ GB free"), "N GB free")]
READ = (".json", ".csv", ".pt")  # the files whose content is compared; the rest only by presence
SHOWN = 4  # differences printed per file; the rest are counted


def export(rev: str, folder: Path) -> Path:
    """The tracked files of revision rev, extracted under folder/src."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                            capture_output=True, text=True).stdout.strip()
    if not commit:
        sys.exit(f"compare_outputs: {rev!r} is not a commit of {REPO}.")
    tar = folder / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", f"--output={tar}", commit], check=True)
    with tarfile.open(tar) as archive:
        archive.extractall(folder / "src", filter="data")
    tar.unlink()
    return folder / "src"


def run_all(src: Path, folder: Path, label: str) -> dict:
    """Run every command in src, each with its own --out under folder; {name: (out, code, stdout)}."""
    done = {}
    for name, (script, *flags) in COMMANDS.items():
        out = folder / name
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(src / script), *flags, "--out", str(out)], cwd=src,
                              capture_output=True, text=True, timeout=1800)
        print(f"{label}: {name} ran in {time.monotonic() - start:.0f} s", flush=True)
        if proc.returncode != 0:
            print(f"{label}: {name} exited with {proc.returncode}; its stderr ends:\n{proc.stderr[-2000:]}")
        stdout = proc.stdout.replace(str(out), "<out>").replace(str(src), "<src>")
        for pattern, mask in STDOUT_NOISE:
            stdout = pattern.sub(mask, stdout)
        done[name] = (out, proc.returncode, stdout)
    return done


def differences(a, b, path: str, found: list, new: tuple = ()) -> int:
    """Append (key path, before, after) for each leaf where a and b differ; return leaves compared.
    A key whose path ends with one of new (a field the after side adds on purpose, e.g.
    "trained_on/threads") is no difference where only the after side has it."""
    if isinstance(a, dict) and isinstance(b, dict):
        count = 0
        for key in sorted(set(a) | set(b), key=str):
            if key in IGNORED_KEYS or (key not in a and f"{path}/{key}".endswith(tuple(f"/{n}" for n in new))):
                continue
            if key not in a or key not in b:
                found.append((f"{path}/{key}", short(a.get(key, "<missing>")), short(b.get(key, "<missing>"))))
                count += 1
            else:
                count += differences(a[key], b[key], f"{path}/{key}", found, new)
        return count
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return sum(differences(x, y, f"{path}/{i}", found, new) for i, (x, y) in enumerate(zip(a, b))) or 1
    if torch.is_tensor(a) and torch.is_tensor(b):
        if a.dtype != b.dtype or a.shape != b.shape:
            found.append((path, f"{a.dtype} {tuple(a.shape)} tensor", f"{b.dtype} {tuple(b.shape)} tensor"))
        elif not torch.equal(a, b):
            unequal = (a != b) & ~(a.isnan() & b.isnan()) if a.is_floating_point() else a != b
            largest = (a.double() - b.double()).abs().max().item() if a.numel() else 0
            found.append((path, f"{a.dtype} {tuple(a.shape)} tensor",
                          f"{int(unequal.sum())} of {a.numel()} elements differ, by up to {largest:.3g}"))
        return 1
    same = type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))
    if not same:
        found.append((path, short(a), short(b)))
    return 1


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def load(path: Path):
    """A file's content to compare: JSON, CSV rows, a checkpoint; None where only its presence counts."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True, map_location="cpu")
    return None


def compare_files(before: Path, after: Path, name: str, new: tuple = ()) -> int:
    """Print the differences between two output folders; return how many problems were found."""
    files_before = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files_after = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    problems = 0
    for rel in sorted(files_before ^ files_after):
        side = "before" if rel in files_before else "after"
        print(f"DIFF {name}/{rel}: only {side} wrote it")
        problems += 1
    results = {}
    for rel in sorted(files_before & files_after):
        found = []
        try:
            leaves = differences(load(before / rel), load(after / rel), "", found, new)
        except (ValueError, RuntimeError, EOFError, OSError, csv.Error, pickle.UnpicklingError) as exc:
            found, leaves = [("", "a file to read", f"{type(exc).__name__}: {exc}")], 1  # damaged: report it
        if found:
            results[rel] = (found, leaves)
    read = [rel for rel in files_before & files_after if rel.suffix in READ]
    shown = results
    if len(results) == len(read) > 1:
        print(f"DIFF {name}: all {len(read)} files differ (the whole run differs); the first of them:")
        shown = dict([next(iter(results.items()))])
    for rel, (found, leaves) in shown.items():
        print_file_differences(f"{name}/{rel}", found, leaves)
    return problems + len(results)


def print_file_differences(label: str, found: list, leaves: int) -> None:
    print(f"DIFF {label}: {len(found)} of {leaves} values differ")
    for path, before, after in found[:SHOWN]:
        print(f"    {path or '/'}: before {before}  after {after}")
    if len(found) > SHOWN:
        print(f"    ... and {len(found) - SHOWN} more")


def compare_runs(before: dict, after: dict, new: tuple = ()) -> int:
    """Compare each command's exit code, stdout and files; return how many problems were found."""
    problems = 0
    for name in COMMANDS:
        out_b, code_b, stdout_b = before[name]
        out_a, code_a, stdout_a = after[name]
        if code_b != code_a or code_b != 0:
            print(f"DIFF {name}: exit code before {code_b}, after {code_a} (both must be 0)")
            problems += 1
        if stdout_b != stdout_a:
            lines = list(difflib.unified_diff(stdout_b.splitlines(), stdout_a.splitlines(), "before", "after",
                                              lineterm="", n=0))
            print(f"DIFF {name}: stdout differs ({len(lines) - 2} diff lines), first:")
            print("\n".join("    " + line for line in lines[2:2 + 2 * SHOWN]))
            problems += 1
        problems += compare_files(out_b, out_a, name, new)
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", help="a revision, e.g. a commit id")
    p.add_argument("after", nargs="?", help="a revision (default: the working tree, as it is)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders and print where they are")
    p.add_argument("--new", nargs="+", default=[], metavar="KEY",
                   help="fields the after side adds on purpose, as key paths (trained_on/threads): allowed where "
                        "only the after side has them, still compared where both have them")
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="compare_outputs."))
    try:
        (folder / "before").mkdir()
        (folder / "after").mkdir()
        src_before = export(args.before, folder / "before")
        src_after = export(args.after, folder / "after") if args.after else REPO
        for name, (script, *flags) in COMMANDS.items():
            print(f"{name}: {script} {' '.join(flags)} --out DIR")
        before = run_all(src_before, folder / "before", f"before ({args.before})")
        after = run_all(src_after, folder / "after", f"after ({args.after or 'the working tree'})")
        problems = compare_runs(before, after, tuple(args.new))
    finally:
        if args.keep:
            print(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{problems} difference(s)" if problems else "no difference: the outputs are the same")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
