"""Behaviours of training that the docs promise and that plausible one-line bugs broke
without the rest of the suite noticing (issue 27): the precision of the device passed,
each fp16 member's own loss scale through a resume and a member leaving, a finished
member's record kept through a later error in its group, the CPU's out-of-memory error
splitting a group, and a run planned again with another config counting as unfinished."""
import math

import pytest
import torch

from core import device as devices
from core import checkpoints
import data
import plotting
from core import results
import sweep
import train
from conftest import interrupt_second_epoch, load_results, run_config, run_script, tiny_argv
from test_gpu_paths import _BlowUp  # an fp16 overflow in one member
from core.fused import FusedAlexNet


@pytest.fixture(scope="module")
def tiny_split(mnist_dir):
    """(dataset, Split): an epoch of one batch of 4 training images, 4 validation and 4 test
    images (the configs say batch 16: what trains is the Split's batches)."""
    ds = data.load_dataset("mnist", str(mnist_dir), 67, download=False)
    train_idx, val_idx = data.split_indices(len(ds.train_labels), "full", 4, 4)
    return ds, train.Split(ds, train_idx, val_idx, 4, 4, 67, torch.device("cpu"))


def smallest(argv):
    """tiny_argv's argv with an epoch of one batch of 4 images, 4 validation and 4 test images:
    what the sweeps below check depends on no accuracy."""
    return [*argv, "--train-size", "4", "--batch-size", "4", "--val-size", "4", "--test-size", "4"]


@pytest.fixture
def no_plots(monkeypatch):
    """Sweeps that draw no plots: what the tests below check is in the results, and drawing the
    plots (read back in test_pictures.py) is a large share of a sweep this small's CPU time."""
    monkeypatch.setattr(plotting, "plot_experiment", lambda results, images_dir: [])


# 1. --precision auto reads the capability of the device passed, not of the current one

def test_auto_precision_reads_the_capability_of_the_device_passed(monkeypatch):
    """On a machine whose cuda:0 is a T4 (7.5) and whose cuda:1 is an A100 (8.0), --device
    cuda:1 trains in bf16 and cuda:0 in fp16."""
    capabilities = {0: (7, 5), 1: (8, 0)}

    def get_device_capability(device=None):
        # torch's own rule: a device, a "cuda:N" string or an index; None (or plain "cuda") is the
        # current device, which is cuda:0 here
        index = torch.device(device).index if isinstance(device, (str, torch.device)) else device
        return capabilities[0 if index is None else index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    assert devices.resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert devices.resolve_precision("auto", torch.device("cuda", 1)) == "bf16"
    assert devices.resolve_precision("auto", torch.device("cuda:0")) == "fp16"
    assert devices.resolve_precision("auto", torch.device("cuda")) == "fp16"


# 2. Each fused fp16 member keeps its own loss scale through a member leaving and a resume

def test_fp16_members_keep_their_own_loss_scales_through_a_member_leaving_and_a_resume(
        tiny_split, tmp_path, monkeypatch):
    """Three fp16 runs fused: run 1's gradients overflow at every step, so its loss scale
    halves at each step while run 0's stays; run 2's loss is NaN in epoch 1, so it leaves the
    group (Group.without). The resume files written after that epoch, and after the next
    epoch trained on from them, hold each run's own scale and growth count."""
    ds, split = tiny_split
    steps = len(split.train)  # steps an epoch, each halving run 1's scale
    # the scalers as in fp16, the arithmetic in fp32: fp16 autocast costs about 20x on a CPU, and what
    # is checked here is each member's scaler state, not fp16 arithmetic
    monkeypatch.setattr(train, "autocast", lambda device, precision: torch.autocast(device.type, enabled=False))
    real = FusedAlexNet.forward

    def forward(self, x):
        logits = real(self, x)
        if self.k == 3:  # run 2, while in the group: a non-finite loss, so it leaves after epoch 1
            logits = logits * torch.tensor([1.0, 1.0, math.nan]).view(3, 1, 1)
        return _BlowUp.apply(logits, 1) if self.k > 1 else logits

    monkeypatch.setattr(FusedAlexNet, "forward", forward)
    configs = [run_config(precision="fp16", kernels="split", epochs=3, seed=s) for s in range(3)]
    paths = [str(tmp_path / f"run{s}.resume.pt") for s in range(3)]
    finished = {}
    with monkeypatch.context() as m:
        interrupt_second_epoch(m)  # after epoch 1's resume files
        with pytest.raises(KeyboardInterrupt):
            train.train_group(configs, split, ds.num_classes, paths, on_finish=finished.__setitem__)
    assert finished.keys() == {2} and finished[2]["status"] == "diverged"
    initial = torch.amp.GradScaler("cpu").get_scale()

    def scalers(epoch):
        states = [checkpoints.load(p) for p in paths[:2]]
        assert [s["epoch"] for s in states] == [epoch, epoch]
        return [(s["scaler"]["scale"], s["scaler"]["_growth_tracker"]) for s in states]

    # saved by the group that run 2 left: run 0 grew its count at each step, run 1 halved its scale
    assert scalers(1) == [(initial, steps), (initial * 0.5 ** steps, 0)]
    with monkeypatch.context() as m:
        interrupt_second_epoch(m)  # after epoch 2's resume files
        with pytest.raises(KeyboardInterrupt):
            train.train_group(configs[:2], split, ds.num_classes, paths[:2])
    assert scalers(2) == [(initial, 2 * steps), (initial * 0.5 ** (2 * steps), 0)]


# 3. An error in a group leaves the record of a member that had already finished as it was

@pytest.mark.parametrize("error", ["an error", "out of memory"])
def test_an_error_after_a_member_diverged_leaves_its_record_as_it_was(mnist_dir, tmp_path, monkeypatch, no_plots,
                                                                    error):
    """Three runs fused; the third diverges in epoch 1 and is recorded; then epoch 2 of the
    other two fails. The diverged run is recorded once, as diverged, and not trained again:
    after an error the other two are recorded failed; after out of memory they go on alone
    from their epoch-1 resume files and complete."""
    real, raised = train.train_one_epoch, []

    def epoch(step, model, loader, seeds, e, *args):
        if len(seeds) == 2 and not raised:  # the group the third run left, in epoch 2
            raised.append(1)
            if error == "out of memory":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        totals = real(step, model, loader, seeds, e, *args)
        if len(seeds) == 3:
            totals[2][0] = math.nan  # the third run's loss: it diverges in epoch 1
        return totals

    monkeypatch.setattr(train, "train_one_epoch", epoch)
    recorded, real_record = [], sweep.record_run

    def record_run(experiment, record, *rest):
        recorded.append((record["name"], record["status"]))
        real_record(experiment, record, *rest)

    monkeypatch.setattr(sweep, "record_run", record_run)
    code, out, err = run_script("main_learning_rate", [
        "--values", "1e-4", "2e-4", "5e-4", "--fuse", "3", "--kernels", "split", "--save", "none",
        *smallest(tiny_argv(mnist_dir, tmp_path, epochs=2))])
    assert raised
    runs = {r["name"]: r for r in load_results(tmp_path, "learning_rate")["runs"]}
    diverged = runs.pop("lr_0.0005")
    assert diverged["status"] == "diverged" and diverged["epochs_completed"] == 0 and "error" not in diverged
    if error == "out of memory":
        assert code == 0, err
        assert "going on as 1 + 1" in out and out.count("resuming from epoch 2 of 2") == 2
        assert [r["status"] for r in runs.values()] == ["completed"] * 2
        assert sorted(recorded) == [("lr_0.0001", "completed"), ("lr_0.0002", "completed"),
                                    ("lr_0.0005", "diverged")]
    else:
        assert code == 1
        assert [r["status"] for r in runs.values()] == ["failed"] * 2
        assert all("illegal memory access" in r["error"] for r in runs.values())
        assert sorted(recorded) == [("lr_0.0001", "failed"), ("lr_0.0002", "failed"), ("lr_0.0005", "diverged")]


# 4. The CPU allocator's out-of-memory error splits a fused group, as CUDA's does

def test_the_cpu_allocators_out_of_memory_error_splits_the_group(mnist_dir, tmp_path, monkeypatch, no_plots):
    """A group of two runs out of host memory in epoch 2 (PyTorch's DefaultCPUAllocator raises
    a RuntimeError, not torch.OutOfMemoryError): the sweep goes on with the runs one at a time,
    each from its epoch-1 resume file, and both complete."""
    real, raised = train.train_one_epoch, []

    def epoch(step, model, loader, seeds, e, *args):
        if len(seeds) == 2 and e == 1 and not raised:  # epoch 2, after epoch 1's resume files
            try:  # the allocator's own error, whatever this PyTorch's wording: 4 EiB fits no machine
                torch.empty(2**62, dtype=torch.uint8)
            except RuntimeError as err:
                raised.append(str(err))
                raise
        return real(step, model, loader, seeds, e, *args)

    monkeypatch.setattr(train, "train_one_epoch", epoch)
    code, out, err = run_script("main_learning_rate", [
        "--values", "1e-4", "1e-3", "--fuse", "2", "--kernels", "split", "--save", "none",
        *smallest(tiny_argv(mnist_dir, tmp_path, epochs=2))])
    assert raised and "can't allocate memory" in raised[0]
    assert code == 0, err
    assert "out of memory with 2 runs fused on cpu; going on as 1 + 1" in out
    assert out.count("resuming from epoch 2 of 2") == 2
    for run in load_results(tmp_path, "learning_rate")["runs"]:
        assert run["status"] == "completed" and run["epochs_completed"] == 2 and run["fused_with"] == []


# 5. A run planned again with another config is unfinished until retrained under it

def test_a_run_planned_again_with_another_config_is_unfinished_until_retrained(mnist_dir, tmp_path, monkeypatch,
                                                                               no_plots):
    """A finished 1-epoch run, then the same sweep with --epochs 2 stopped by Ctrl-C before
    the run finishes: the run counts as pending, in the progress the report and
    --from-results read and in the results file's, and the rerun trains it again rather
    than skip it; once retrained it is finished, recorded with its new config."""
    argv = lambda epochs: ["--values", "1e-4", *smallest(tiny_argv(mnist_dir, tmp_path, epochs=epochs))]
    code, _, err = run_script("main_learning_rate", argv(1))
    assert code == 0, err
    key = results.run_key("lr_0.0001", 0)
    assert results.read_with_progress(str(tmp_path), "learning_rate")["progress"]["pending"] == []
    with monkeypatch.context() as m:
        interrupt_second_epoch(m)  # in epoch 2, which only the new config has: it was trained again
        code, _, err = run_script("main_learning_rate", argv(2))
    assert code == 130, err
    progress = results.read_with_progress(str(tmp_path), "learning_rate")["progress"]
    assert progress["pending"] == [key] and (progress["planned"], progress["finished"]) == (1, 0)
    # the results file the finished sweep wrote says so too, though the stopped one finished no run
    assert load_results(tmp_path, "learning_rate")["progress"] == progress
    code, out, err = run_script("main_learning_rate", argv(2))
    assert code == 0, err
    assert "resuming from epoch 2 of 2" in out
    progress = results.read_with_progress(str(tmp_path), "learning_rate")["progress"]
    assert progress["pending"] == [] and (progress["planned"], progress["finished"]) == (1, 1)
    (run,) = load_results(tmp_path, "learning_rate")["runs"]
    assert run["config"]["epochs"] == 2 and run["epochs_completed"] == 2
