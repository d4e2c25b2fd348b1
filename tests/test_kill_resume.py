"""Reliability: a sweep killed with SIGKILL mid-run resumes from its last resume
checkpoint and ends exactly where an uninterrupted run of the same command ends,
alone and as a fused group resumed with another K."""
import os
import signal
import subprocess

import pytest

from conftest import HANG, ROOT, child_env, load_results, paused_command, run_script, tiny_argv, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")]


def argv(data_dir, out):
    # dropout on, so the resumed run must also restore its dropout RNG state; two epochs, so that the
    # resume point (after epoch 1) lies between epochs, two steps each so that the data order counts
    return ["--values", "0.3", "--regime", "subset", "--dataset", "mnist", "--data-dir", str(data_dir),
            "--image-size", "67", "--train-size", "64", "--val-size", "16", "--test-size", "16", "--batch-size", "32",
            "--epochs", "2", "--precision", "fp32", "--device", "cpu", "--checkpoint-seconds", "0", "--out", str(out)]


def test_sigkill_then_rerun_matches_an_uninterrupted_run(mnist_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    code, _, err = run_script("main_dropout", argv(mnist_dir, whole))
    assert code == 0, err
    (reference,) = load_results(whole, "dropout")["runs"]
    assert reference["status"] == "completed" and len(reference["history"]["loss"]) == 2

    resume = killed / "models" / "dropout" / "p0.3.resume.pt"
    command, paused = paused_command(tmp_path, "main_dropout", argv(mnist_dir, killed))
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        wait_for(paused, proc)  # epoch 1 is saved; the process waits inside its second epoch's start
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert resume.exists()
    assert not (killed / "results" / "dropout.json").exists()  # it really died mid-sweep

    code, text, err = run_script("main_dropout", argv(mnist_dir, killed))
    assert code == 0, err
    assert "resuming from epoch 2 of 2" in text and "epoch 1/2" not in text  # epoch 1 was not retrained
    (again,) = load_results(killed, "dropout")["runs"]
    assert again["status"] == "completed"
    assert again["history"] == reference["history"] and again["test_acc"] == reference["test_acc"]
    assert not resume.exists()
    assert (killed / "models" / "dropout" / "p0.3.pt").exists()


def fused_argv(data_dir, out, fuse, epochs=2):
    """Split kernels: every K computes each run's own arithmetic, so any K gives the same numbers. Two
    epochs: the kill lands between them, after epoch 1's resume files."""
    return ["--values", "1e-4", "3e-4", "1e-3", *tiny_argv(data_dir, out, epochs=epochs), "--fuse", str(fuse),
            "--kernels", "split"]


def test_a_fused_group_killed_resumes_exactly_with_another_k(mnist_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    code, _, err = run_script("main_learning_rate", fused_argv(mnist_dir, whole, 1))
    assert code == 0, err
    reference = {r["name"]: r for r in load_results(whole, "learning_rate")["runs"]}

    command, paused = paused_command(tmp_path, "main_learning_rate", fused_argv(mnist_dir, killed, 3))
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        wait_for(paused, proc)  # the group of 3 saved epoch 1 of each run, then waits
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "results" / "learning_rate.json").exists()  # it died mid-group

    code, out, err = run_script("main_learning_rate", fused_argv(mnist_dir, killed, 2))
    assert code == 0, err
    assert out.count("resuming from epoch 2 of 2") == 3 and "fused: 2 + 1 runs at once" in out
    runs = {r["name"]: r for r in load_results(killed, "learning_rate")["runs"]}
    assert runs.keys() == reference.keys()
    # The reference trained each run alone, the killed run in a group of 3, the rerun in groups of
    # 2 and 1; with split kernels all of them compute each run's own arithmetic: equal, not close
    for name in runs:
        assert runs[name]["status"] == "completed"
        assert runs[name]["history"] == reference[name]["history"]
        assert runs[name]["test_acc"] == reference[name]["test_acc"]
