"""The test suite's peak memory: runs a pytest command and samples, twice a second, the memory
of every process it started (the xdist processes, the scripts they run, torchrun's ranks) and
the size of the tests' files on a RAM disk, then prints the peaks.

    .venv/bin/python tests/peak_memory.py                      # the README's test command
    .venv/bin/python tests/peak_memory.py -- -m "not slow"     # other pytest arguments

Two sums are given for the processes: RSS, which counts each shared page (torch's libraries)
once per process, and PSS, which shares them out and so adds up to what the machine holds.
Files on a RAM disk (/dev/shm) are memory too, and are added to both. Not a test: sampling
can miss a peak shorter than half a second, so the figure is a floor, stated as measured.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def descendants(pid: int) -> list:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def kib(pid: int, field: str, name: str) -> int:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def ram_disk_bytes(before: set) -> int:
    """Bytes in the folders that the tests made on /dev/shm since the run started."""
    total = 0
    for entry in set(os.listdir("/dev/shm")) - before:
        for folder, _, files in os.walk(os.path.join("/dev/shm", entry)):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="tests/peak_memory.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        help="pytest's arguments, after -- (default: tests, the README's test command)")
    args = parser.parse_args(argv)
    pytest_args = [a for a in args.pytest_args if a != "--"] or ["tests"]
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args], cwd=ROOT)
    peak = {"rss": 0, "pss": 0, "ram_disk": 0, "rss_all": 0, "pss_all": 0, "largest_process_rss": 0}
    start = time.perf_counter()
    while proc.poll() is None:
        pids = descendants(proc.pid)
        rss = [kib(p, "VmRSS", "status") * 1024 for p in pids]
        pss = sum(kib(p, "Pss", "smaps_rollup") * 1024 for p in pids)
        shm = ram_disk_bytes(before) if before is not None and os.path.isdir("/dev/shm") else 0
        sample = {"rss": sum(rss), "pss": pss, "ram_disk": shm, "rss_all": sum(rss) + shm, "pss_all": pss + shm,
                  "largest_process_rss": max(rss, default=0)}
        peak = {k: max(peak[k], sample[k]) for k in peak}
        time.sleep(0.5)
    gib = {k: round(v / 2**30, 2) for k, v in peak.items()}
    print(f"\npeak memory of the suite over {time.perf_counter() - start:.0f} s (GiB): "
          f"processes' RSS + RAM-disk files {gib['rss_all']}, PSS + RAM-disk files {gib['pss_all']} "
          f"(RSS alone {gib['rss']}, PSS alone {gib['pss']}, RAM-disk files alone {gib['ram_disk']}, "
          f"largest process {gib['largest_process_rss']}); pytest exit code {proc.returncode}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
