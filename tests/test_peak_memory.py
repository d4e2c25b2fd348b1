"""tests/peak_memory.py, the command docs/tests.md gives for the suite's peak memory, run on one
small test (its figures depend on the machine: only their presence and form are checked)."""
import re
import subprocess
import sys

from conftest import HANG, ROOT


def test_it_runs_pytest_and_states_the_peaks():
    proc = subprocess.run([sys.executable, "tests/peak_memory.py", "--", "-n0",
                           "tests/test_stats.py::test_describe_from_first_principles"], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("peak memory of the suite"))
    rss = float(re.search(r"processes' RSS \+ RAM-disk files ([\d.]+)", line).group(1))
    assert rss > 0 and "pytest exit code 0" in line
