"""torchrun --strategy ddp: two gloo processes on CPU train the same sweep as one process
with the same global batch. Each rank takes half of every global batch and DDP averages the
gradients, so the per-epoch losses agree up to the order of floating-point sums."""
import json
import os
import subprocess

import pytest
import torch

from conftest import ROOT, TORCHRUN, interrupt_second_epoch, load_results, run_script

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")]

LOSS_RTOL = 1e-6  # relative; float sums in another order (seen: 4e-8), compounded over 6 Adam steps
RESUMED, FRESH = "l1_0.0003_l2_0.0003", "l1_0.0001_l2_0.0001"  # in sweep order


def argv(data_dir, out):
    """Two runs with an elastic-net penalty (the plain loss and the penalty, both averaged by DDP),
    a resume checkpoint after every epoch."""
    return ["--values", "3e-4,3e-4", "1e-4,1e-4", "--dataset", "mnist", "--data-dir", str(data_dir),
            "--image-size", "67", "--train-size", "25", "--val-size", "16", "--test-size", "16", "--batch-size", "16",
            "--epochs", "2", "--checkpoint-seconds", "0", "--precision", "fp32", "--device", "cpu", "--out", str(out),
            "--strategy", "ddp"]


def run(cmd, log):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=300, env=env)
    text = open(log).read()
    assert proc.returncode == 0, text
    return text


def by_name(out):
    return {r["name"]: r for r in load_results(out, "weight_regularization")["runs"]}


@pytest.fixture(scope="module")
def sweeps(mnist_dir, tmp_path_factory):
    """One torchrun launch for both tests below. The two-run sweep done whole in this process
    (the reference), and the same sweep cut by Ctrl-C after the first run's epoch 1 (the second
    run not begun), then finished under torchrun --strategy ddp with 2 gloo processes: the
    first run resumes from its one-process resume file, the second trains from scratch."""
    tmp = tmp_path_factory.mktemp("ddp")
    single, multi = tmp / "single", tmp / "multi"
    code, _, err = run_script("main_weight_regularization", argv(mnist_dir, single))
    assert code == 0, err
    with pytest.MonkeyPatch.context() as m:
        interrupt_second_epoch(m)
        code, _, err = run_script("main_weight_regularization", argv(mnist_dir, multi))
    assert code == 130 and "run the same command again to resume" in err and "Traceback" not in err
    models = multi / "models" / "weight_regularization"
    resume = models / f"{RESUMED}.resume.pt"
    before = dict(resume_existed=resume.exists(),
                  recorded=os.path.exists(multi / "results" / "weight_regularization.json")
                  and set(by_name(multi)))
    text = run([*TORCHRUN, "main_weight_regularization.py", *argv(mnist_dir, multi)], tmp / "multi.log")
    return dict(single=single, multi=multi, text=text, resume=resume, before=before)


def test_two_gloo_processes_match_one_process(sweeps):
    single, multi, text = sweeps["single"], sweeps["multi"], sweeps["text"]
    assert "2 processes" in text
    assert text.count("weight_regularization: 2 settings") == 1  # only rank 0 prints
    assert f"{FRESH} epoch 1/2" in text  # the second run was trained from scratch under torchrun

    with open(single / "results" / "weight_regularization.json") as f:
        one = {r["name"]: r for r in json.load(f)["runs"]}
    with open(multi / "results" / "weight_regularization.json") as f:
        two = {r["name"]: r for r in json.load(f)["runs"]}
    assert one.keys() == two.keys() == {RESUMED, FRESH}
    for name in one:
        assert two[name]["status"] == "completed" and two[name]["world_size"] == 2
        assert one[name]["world_size"] == 1 and one[name]["fused_with"] == []  # each trained alone
        assert two[name]["config"] == one[name]["config"]
        # 25 images in global batches of 16 and 9: the last splits unevenly, 5 / 4
        assert torch.allclose(torch.tensor(two[name]["history"]["loss"], dtype=torch.float64),
                              torch.tensor(one[name]["history"]["loss"], dtype=torch.float64), rtol=LOSS_RTOL)
        ckpt = torch.load(multi / "models" / "weight_regularization" / f"{name}.pt", weights_only=True,
                          map_location="cpu")
        assert not any(k.startswith("module.") for k in ckpt["model"])
    assert sorted(os.listdir(multi / "models" / "weight_regularization")) == \
        sorted(f"{name}{end}" for name in (RESUMED, FRESH) for end in (".best.pt", ".pt"))


def test_torchrun_resumes_a_run_interrupted_in_one_process(sweeps):
    """The resume checkpoint does not depend on the number of processes: a run cut
    after epoch 1 in one process finishes under torchrun where the uninterrupted
    single-process run ends."""
    before, text = sweeps["before"], sweeps["text"]
    assert before["resume_existed"] and not before["recorded"]  # cut after epoch 1, nothing recorded yet
    assert f"{RESUMED}: resuming from epoch 2 of 2" in text and f"{RESUMED} epoch 1/2" not in text
    again = by_name(sweeps["multi"])[RESUMED]
    reference = by_name(sweeps["single"])[RESUMED]
    assert again["world_size"] == 2 and not sweeps["resume"].exists()
    assert torch.allclose(torch.tensor(again["history"]["loss"], dtype=torch.float64),
                          torch.tensor(reference["history"]["loss"], dtype=torch.float64), rtol=LOSS_RTOL)


def test_a_run_failing_on_one_rank_ends_the_job_instead_of_hanging(mnist_dir, tmp_path):
    wrapper = tmp_path / "fail_on_rank1.py"
    wrapper.write_text(f'''import os, sys
sys.path.insert(0, {str(ROOT)!r})
import sweep  # first, as the scripts load torch (sweep.py: no garbage collection meanwhile)
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
    argv = ["--values", "1e-4", "1e-3", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "67",
            "--train-size", "32", "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--epochs", "1",
            "--precision", "fp32", "--device", "cpu", "--out", str(tmp_path / "out"), "--strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*TORCHRUN, str(wrapper), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=env)  # a hang would hit the timeout and fail the test
    assert proc.returncode != 0
    assert "out of memory, say" in proc.stdout + proc.stderr
