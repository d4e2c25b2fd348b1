"""Reliability: a sweep killed with SIGKILL mid-run resumes from its last resume
checkpoint and ends exactly where an uninterrupted run of the same command ends."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def command(data_dir, out):
    # dropout on, so the resumed run must also restore its dropout RNG state
    return [sys.executable, "main_dropout.py", "--values", "0.3", "--regime", "subset",
            "--dataset", "mnist", "--data-dir", str(data_dir), "--image-size", "67",
            "--train-size", "160", "--val-size", "16", "--test-size", "16", "--batch-size", "32",
            "--epochs", "4", "--precision", "fp32", "--device", "cpu", "--checkpoint-seconds", "0",
            "--out", str(out)]


def run_to_completion(cmd, log):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=240)
    text = open(log).read()
    assert proc.returncode == 0, text
    return text


def results(out):
    with open(os.path.join(out, "results", "dropout.json")) as f:
        (run,) = json.load(f)["runs"]
    return run


def test_sigkill_then_rerun_matches_an_uninterrupted_run(mnist_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_to_completion(command(mnist_dir, whole), tmp_path / "whole.log")
    reference = results(whole)
    assert reference["status"] == "completed" and len(reference["history"]["loss"]) == 4

    resume = killed / "models" / "dropout" / "p0.3.resume.pt"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(command(mnist_dir, killed), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not resume.exists():
                assert proc.poll() is None, "the run ended before writing a resume checkpoint"
                assert time.monotonic() < deadline, "no resume checkpoint appeared"
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert resume.exists()
    assert not (killed / "results" / "dropout.json").exists()  # it really died mid-sweep

    text = run_to_completion(command(mnist_dir, killed), tmp_path / "rerun.log")
    assert "resuming from epoch" in text
    resumed_at = int(text.split("resuming from epoch ")[1].split()[0])
    assert 2 <= resumed_at <= 4
    assert f"epoch {resumed_at - 1}/4" not in text  # earlier epochs were not retrained

    again = results(killed)
    assert again["status"] == "completed"
    for key in ("loss", "train_acc", "val_acc"):
        assert again["history"][key] == pytest.approx(reference["history"][key], abs=1e-6), key
    assert again["test_acc"] == pytest.approx(reference["test_acc"], abs=1e-6)
    assert not resume.exists()
    assert (killed / "models" / "dropout" / "p0.3.pt").exists()
