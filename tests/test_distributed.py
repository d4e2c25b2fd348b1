"""torchrun --strategy ddp: two gloo processes on CPU train the same sweep as one process
with the same global batch. Each rank takes half of every global batch and DDP averages the
gradients, so the per-epoch losses agree up to the order of floating-point sums."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, load_results, run_script, whole_and_cut_lr_run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")]

LOSS_RTOL = 1e-6  # relative; float sums in another order (seen: 4e-8), compounded over 6 Adam steps


def argv(data_dir, out):
    """One run with an elastic-net penalty (the plain loss and the penalty, both averaged by DDP)."""
    return ["--values", "1e-4,1e-4", "--dataset", "mnist", "--data-dir", str(data_dir), "--image-size", "67",
            "--train-size", "41", "--val-size", "16", "--test-size", "16", "--batch-size", "16",
            "--epochs", "2", "--precision", "fp32", "--device", "cpu", "--out", str(out), "--strategy", "ddp"]


def run(cmd, log):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=300, env=env)
    text = open(log).read()
    assert proc.returncode == 0, text
    return text


def test_two_gloo_processes_match_one_process(mnist_dir, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    code, _, err = run_script("main_weight_regularization", argv(mnist_dir, single))
    assert code == 0, err
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    text = run([*torchrun, "main_weight_regularization.py", *argv(mnist_dir, multi)], tmp_path / "multi.log")
    assert "2 processes" in text
    assert text.count("weight_regularization: 1 settings") == 1  # only rank 0 prints

    with open(single / "results" / "weight_regularization.json") as f:
        one = {r["name"]: r for r in json.load(f)["runs"]}
    with open(multi / "results" / "weight_regularization.json") as f:
        two = {r["name"]: r for r in json.load(f)["runs"]}
    assert one.keys() == two.keys() == {"l1_0.0001_l2_0.0001"}
    for name in one:
        assert two[name]["status"] == "completed" and two[name]["world_size"] == 2
        assert one[name]["world_size"] == 1
        assert two[name]["config"] == one[name]["config"]
        # 41 images in global batches of 16, 16 and 9: the last splits unevenly, 5 / 4
        assert torch.allclose(torch.tensor(two[name]["history"]["loss"], dtype=torch.float64),
                              torch.tensor(one[name]["history"]["loss"], dtype=torch.float64), rtol=LOSS_RTOL)
        ckpt = torch.load(multi / "models" / "weight_regularization" / f"{name}.pt", weights_only=True,
                          map_location="cpu")
        assert not any(k.startswith("module.") for k in ckpt["model"])
    assert sorted(os.listdir(multi / "models" / "weight_regularization")) == \
        ["l1_0.0001_l2_0.0001.best.pt", "l1_0.0001_l2_0.0001.pt"]


def test_torchrun_resumes_a_run_interrupted_in_one_process(mnist_dir, tmp_path, monkeypatch):
    """The resume checkpoint does not depend on the number of processes: a run cut
    after epoch 1 in one process finishes under torchrun where the uninterrupted
    single-process run ends."""
    argv, reference, cut, resume = whole_and_cut_lr_run(mnist_dir, tmp_path, monkeypatch)
    assert resume.exists()

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    text = run([*torchrun, "main_learning_rate.py", *argv(cut), "--strategy", "ddp"], tmp_path / "resumed.log")
    assert "resuming from epoch 2 of 2" in text and "epoch 1/2" not in text
    again = load_results(cut, "learning_rate")["runs"][0]
    assert again["world_size"] == 2 and not resume.exists()
    assert torch.allclose(torch.tensor(again["history"]["loss"], dtype=torch.float64),
                          torch.tensor(reference["history"]["loss"], dtype=torch.float64), rtol=LOSS_RTOL)


def test_a_run_failing_on_one_rank_ends_the_job_instead_of_hanging(mnist_dir, tmp_path):
    wrapper = tmp_path / "fail_on_rank1.py"
    wrapper.write_text(f'''import os, sys
sys.path.insert(0, {str(ROOT)!r})
import train
real = train.train_group
def train_group(*args, **kwargs):
    if os.environ["RANK"] == "1":
        raise RuntimeError("out of memory, say")
    return real(*args, **kwargs)
train.train_group = train_group
import main_learning_rate
sys.exit(main_learning_rate.main(sys.argv[1:]))
''')
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    argv = ["--values", "1e-4", "1e-3", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "67",
            "--train-size", "32", "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--epochs", "1",
            "--precision", "fp32", "--device", "cpu", "--out", str(tmp_path / "out"), "--strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*torchrun, str(wrapper), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=env)  # a hang would hit the timeout and fail the test
    assert proc.returncode != 0
    assert "out of memory, say" in proc.stdout + proc.stderr
