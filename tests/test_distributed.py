"""torchrun --strategy ddp: two gloo processes on CPU train the same sweep as one process
with the same global batch. Each rank takes half of every global batch and DDP averages the
gradients, so the per-epoch losses agree up to the order of floating-point sums."""
import json
import os
import subprocess

import pytest
import torch

from conftest import HANG, ROOT, TORCHRUN, interrupt_second_epoch, load_results, run_script

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
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=HANG, env=env)
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


def run_failing_on_rank1(mnist_dir, tmp_path, message: str, strategy: str, train_size: str):
    """torchrun with 2 gloo processes of main_learning_rate.py (two rates, one epoch) whose
    rank 1 raises RuntimeError(message) where it would train; the finished process."""
    wrapper = tmp_path / "fail_on_rank1.py"
    wrapper.write_text(f'''import os, sys
sys.path.insert(0, {str(ROOT)!r})
import sweep  # first, as the scripts load torch (sweep.py: no garbage collection meanwhile)
import train
real = train.train_group
def train_group(*args, **kwargs):
    if os.environ["RANK"] == "1":
        raise RuntimeError({message!r})
    return real(*args, **kwargs)
train.train_group = train_group
import main_learning_rate
sys.exit(main_learning_rate.main(sys.argv[1:]))
''')
    argv = ["--values", "1e-4", "1e-3", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "67",
            "--train-size", train_size, "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--epochs",
            "1", "--precision", "fp32", "--device", "cpu", "--out", str(tmp_path / "out"), "--strategy", strategy]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, str(wrapper), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG, env=env)  # a hang would hit the timeout and fail the test


def test_a_run_failing_on_one_rank_ends_the_job_instead_of_hanging(mnist_dir, tmp_path):
    proc = run_failing_on_rank1(mnist_dir, tmp_path, "out of memory, say", "ddp", "32")
    assert proc.returncode != 0
    assert "out of memory, say" in proc.stdout + proc.stderr


def test_spread_ranks_with_uneven_shares_outwait_any_barrier_timeout(mnist_dir, tmp_path):
    """--strategy spread: a rank that finishes its share long before another waits for it
    without a timeout (issue 29: every rank waited in dist.barrier(), which NCCL's watchdog ends
    after 10 minutes, so any uneven paper-scale sweep on 2 GPUs was killed). Here every barrier
    times out after 2 s and rank 1 starts 6 s late: the sweep must still end whole."""
    wrapper = tmp_path / "uneven.py"
    wrapper.write_text(f'''import os, sys, time, datetime
sys.path.insert(0, {str(ROOT)!r})
import sweep  # first, as the scripts load torch (sweep.py: no garbage collection meanwhile)
import torch.distributed as dist
dist.barrier = lambda *a, **k: dist.monitored_barrier(timeout=datetime.timedelta(seconds=2))
real = sweep.train_jobs
def train_jobs(*args, **kwargs):
    if os.environ["RANK"] == "1":
        time.sleep(6)
    return real(*args, **kwargs)
sweep.train_jobs = train_jobs
import main_learning_rate
sys.exit(main_learning_rate.main(sys.argv[1:]))
''')
    argv = ["--values", "1e-4", "1e-3", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "67",
            "--train-size", "16", "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--epochs", "1",
            "--precision", "fp32", "--device", "cpu", "--save", "none", "--out", str(tmp_path / "out"),
            "--strategy", "spread"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*TORCHRUN, str(wrapper), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = load_results(tmp_path / "out", "learning_rate")["runs"]
    assert sorted(r["status"] for r in runs) == ["completed"] * 2
    assert sorted(r["trained_on"]["rank"] for r in runs) == [0, 1]


def test_a_run_failing_on_another_rank_fails_the_spread_job(mnist_dir, tmp_path):
    """--strategy spread: a run that fails on rank 1 is recorded as failed, the other rank's run
    completes, and the job's exit code says a run failed (rank 1 exits 1, so torchrun does),
    as one process's would."""
    proc = run_failing_on_rank1(mnist_dir, tmp_path, "a broken device, say", "spread", "16")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    runs = {r["trained_on"]["rank"]: r for r in load_results(tmp_path / "out", "learning_rate")["runs"]}
    assert runs[0]["status"] == "completed" and runs[1]["status"] == "failed"
    assert runs[1]["error"] == "RuntimeError: a broken device, say"


@pytest.mark.parametrize("kernels", ["grouped", "split"])
def test_each_process_of_a_data_parallel_batch_draws_the_single_process_dropout_masks(kernels):
    """--strategy ddp with dropout: rank r holds every world_size-th image of the global batch,
    and its dropout masks are that image's masks in the one-process run (issue 29: each rank drew
    masks for its own rows from the same seed, so the i-th image of every rank got the same mask:
    less dropout noise than the one-process run, which the dropout ablation would then misjudge)."""
    from alexnet import AlexNet
    from core.fused import FusedAlexNet

    def model():
        torch.manual_seed(0)
        members = [AlexNet(num_classes=10, activation="relu", dropout=0.5, image_size=67) for _ in range(2)]
        generators = [torch.Generator().manual_seed(7 + k) for k in range(2)]
        fused = FusedAlexNet(members, ["relu", "relu"], [0.5, 0.5], generators).train()
        fused.kernels = {name: kernels for name in fused.kernels}
        return fused
    x = torch.randn(5, 6, 67, 67)  # a global batch of 5 images, 2 members side by side in the channels
    with torch.no_grad():
        whole = model()(x)
        shares = [model()(x[rank::2], (rank, 2, 5)) for rank in range(2)]
    for rank, share in enumerate(shares):
        torch.testing.assert_close(share, whole[:, rank::2], rtol=1e-4, atol=1e-5)


def test_two_gloo_processes_with_dropout_match_one_process(mnist_dir, tmp_path):
    """The same as test_two_gloo_processes_match_one_process, for a dropout run: under torchrun
    --strategy ddp each rank draws its rows of the one-process run's masks, so the losses agree
    as closely as without dropout (with the same masks on both ranks they differ from epoch 1)."""
    def argv(out, *extra):
        return ["--values", "0.5", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "67",
                "--train-size", "25", "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--epochs", "2",
                "--precision", "fp32", "--device", "cpu", "--save", "none", "--out", str(out), *extra]
    code, _, err = run_script("main_dropout", argv(tmp_path / "single"))
    assert code == 0, err
    run([*TORCHRUN, "main_dropout.py", *argv(tmp_path / "multi", "--strategy", "ddp")], tmp_path / "multi.log")
    (one,), (two,) = (load_results(tmp_path / out, "dropout")["runs"] for out in ("single", "multi"))
    assert two["world_size"] == 2 and two["config"] == one["config"]
    # seen: 3e-8 in epoch 1 and 1.6e-6 in epoch 2 (sums in another order, then Adam's steps on them);
    # with each rank's masks drawn for its own rows, epoch 1 alone differed by 1.2e-3
    assert torch.allclose(torch.tensor(two["history"]["loss"], dtype=torch.float64),
                          torch.tensor(one["history"]["loss"], dtype=torch.float64), rtol=1e-4)
