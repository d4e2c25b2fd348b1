"""train.py: the weight penalty, optimizers, checkpoints and train_run itself
(history, determinism, in-process resume, divergence)."""
import math
import os

import pytest
import torch
from torch import nn

from core import device as devices
from core.optimizers import OPTIMIZERS
from core import checkpoints
import train
from alexnet import AlexNet
from conftest import run_config, tiny_split_of


# ---------------------------------------------------------------------------
# Weight penalty: L1 * sum(|w|) + L2 * sum(w^2) over every parameter, biases included, per run

def two_fused_alexnets():
    from core.fused import FusedAlexNet
    torch.manual_seed(0)
    members = [AlexNet(image_size=67), AlexNet(image_size=67)]
    return members, FusedAlexNet(members, ["relu", "relu"], [0.0, 0.0], [None, None])


def test_weight_penalty_is_each_runs_own_l1_l2_and_elastic_net_with_biases():
    members, fused = two_fused_alexnets()
    l1 = torch.tensor([5e-6, 0.0])
    l2 = torch.tensor([9.5e-5, 1e-3])
    got = fused.penalty(l1, l2)
    for k, m in enumerate(members):
        abs_sum = sum(p.abs().sum() for p in m.parameters())
        sq_sum = sum(p.pow(2).sum() for p in m.parameters())
        assert got[k].item() == pytest.approx((l1[k] * abs_sum + l2[k] * sq_sum).item(), rel=1e-5)
    assert fused.penalty(None, l2)[0].item() == pytest.approx(
        (l2[0] * sum(p.pow(2).sum() for p in members[0].parameters())).item(), rel=1e-5)
    assert fused.penalty(None, None).tolist() == [0.0, 0.0]


def test_weight_penalty_gradient_reaches_only_its_own_run():
    members, fused = two_fused_alexnets()
    fused.penalty(torch.tensor([0.5, 0.0]), torch.tensor([0.25, 0.0])).sum().backward()
    for name in ("conv1.weight", "fc3.bias"):
        w0 = fused.member_tensors(0)[name].detach()
        assert torch.allclose(fused.member_tensors(0, grads=True)[name], 0.5 * w0.sign() + 0.25 * 2 * w0)
        assert not fused.member_tensors(1, grads=True)[name].any()  # run 1 has no penalty


# ---------------------------------------------------------------------------
# Optimizers

def test_study_optimizers_and_learning_rates():
    assert OPTIMIZERS["sgd"][:2] == (torch.optim.SGD, 0.1)
    assert OPTIMIZERS["adagrad"][:2] == (torch.optim.Adagrad, 0.01)
    assert OPTIMIZERS["adam"][:2] == (torch.optim.Adam, 1e-4)
    assert OPTIMIZERS["sgd-momentum"][2] == {"momentum": 0.9}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_takes_a_step_that_changes_the_weights(name):
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    opt = train.make_optimizer(name, layer.parameters(), 0.05)
    cls, _, extra = OPTIMIZERS[name]
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == 0.05
    for key, value in extra.items():
        assert opt.param_groups[0][key] == value
    loss = layer(torch.randn(8, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, layer.parameters()))


def test_defaults_are_the_studys_baseline():
    d = train.DEFAULTS
    assert (d["optimizer"], d["lr"], d["activation"], d["dropout"], d["l1"], d["l2"]) == ("adam", 1e-4, "relu", 0.0, 0.0, 0.0)
    assert (d["batch_size"], d["image_size"], d["dataset"], d["regime"]) == (64, 227, "cifar10", "subset")


def test_resolve_device_and_precision():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert devices.resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    if not torch.cuda.is_available():
        assert devices.resolve_device("auto").type in ("cpu", "mps")


def test_atomic_save_and_load_checkpoint(tmp_path):
    path = str(tmp_path / "sub" / "x.pt")
    checkpoints.save({"a": torch.arange(3), "h": [1.0, 2.0], "n": None}, path)
    assert os.listdir(tmp_path / "sub") == ["x.pt"]  # no temporary left behind
    got = checkpoints.load(path)
    assert torch.equal(got["a"], torch.arange(3)) and got["h"] == [1.0, 2.0] and got["n"] is None


# ---------------------------------------------------------------------------
# train_run

@pytest.fixture(scope="module")
def tiny_split(mnist_dir):
    return tiny_split_of(mnist_dir, "subset", 32, 16, 16)


@pytest.fixture(scope="module")
def one_batch_split(mnist_dir):
    """16 training images, one batch an epoch, and 8 validation and 8 test images: for the
    checks of which epochs write a resume file and which file is resumed, which do not
    depend on what an epoch holds."""
    return tiny_split_of(mnist_dir, "subset", 16, 8, 8)


config = run_config


@pytest.fixture(scope="module")
def first_epoch(tiny_split):
    """One epoch of config() on tiny_split (shared by the tests that only read it)."""
    ds, split = tiny_split
    return train.train_run(config(epochs=1), split, ds.num_classes)


def test_split_shares_the_training_images_and_caps_the_test_set(tiny_split):
    ds, split = tiny_split
    assert len(split.train.indices) == 32 and len(split.val.indices) == 16 and len(split.test.indices) == 16
    assert split.train.train and not split.val.train and not split.test.train
    assert split.val.images is split.train.images
    assert split.test.indices.tolist() == list(range(16))
    assert not set(split.train.indices.tolist()) & set(split.val.indices.tolist())


def test_train_run_returns_a_complete_record(tiny_split, capsys):
    ds, split = tiny_split
    rec = train.train_run(config(), split, ds.num_classes, None, "probe")
    assert rec["status"] == "completed"
    assert rec["epochs_completed"] == 2
    for key in ("loss", "train_acc", "val_acc"):
        assert len(rec["history"][key]) == 2
    assert all(math.isfinite(v) and v > 0 for v in rec["history"]["loss"])
    assert all(0 <= v <= 1 for v in rec["history"]["train_acc"] + rec["history"]["val_acc"])
    assert 0 <= rec["test_acc"] <= 1
    # accuracies are counts over 32 training / 16 validation / 16 test images
    assert all((v * 32).is_integer() for v in rec["history"]["train_acc"])
    assert (rec["test_acc"] * 16).is_integer()
    assert rec["best_val_acc"] == max(rec["history"]["val_acc"])
    model = AlexNet(num_classes=10, image_size=67)
    model.load_state_dict(rec["model"])  # strict: the plain module's keys
    assert "probe epoch 2/2" in capsys.readouterr().out


def test_train_run_is_deterministic_for_a_seed(tiny_split, first_epoch):
    ds, split = tiny_split
    a = first_epoch
    b = train.train_run(config(epochs=1), split, ds.num_classes)
    c = train.train_run(config(epochs=1, seed=1), split, ds.num_classes)
    assert a["history"] == b["history"] and a["test_acc"] == b["test_acc"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not torch.equal(a["model"]["conv1.weight"], c["model"]["conv1.weight"])


def test_training_lowers_the_loss_on_a_learnable_task(tiny_split):
    ds, split = tiny_split
    rec = train.train_run(config(epochs=3, lr=3e-4), split, ds.num_classes)
    assert rec["history"]["loss"][-1] < rec["history"]["loss"][0]


def test_train_acc_eval_mode(tiny_split):
    ds, split = tiny_split
    rec = train.train_run(config(epochs=1, train_acc="eval", dropout=0.5), split, ds.num_classes)
    assert rec["status"] == "completed" and len(rec["history"]["train_acc"]) == 1
    assert (rec["history"]["train_acc"][0] * 32).is_integer()


def test_weight_penalty_enters_the_reported_loss(tiny_split, first_epoch):
    ds, split = tiny_split
    plain = first_epoch
    penalised = train.train_run(config(epochs=1, l2=1e-2), split, ds.num_classes)
    assert penalised["history"]["loss"][0] > plain["history"]["loss"][0] + 1


def test_in_process_resume_reproduces_the_uninterrupted_run(tiny_split, tmp_path, capsys):
    """A 2-epoch run leaves a resume checkpoint after epoch 1; a second call on it
    resumes there and must end exactly where the first run ended (dropout on, so the
    run's own dropout RNG state has to be restored too)."""
    ds, split = tiny_split
    cfg = config(epochs=2, dropout=0.3)
    resume = str(tmp_path / "run.resume.pt")
    first = train.train_run(cfg, split, ds.num_classes, resume, "first")
    state = checkpoints.load(resume)
    assert state["epoch"] == 1 and state["config"] == cfg  # not rewritten after the last epoch
    assert state["history"]["loss"] == first["history"]["loss"][:1]
    capsys.readouterr()
    second = train.train_run(cfg, split, ds.num_classes, resume, "second")
    assert "second: resuming from epoch 2 of 2" in capsys.readouterr().out
    assert second["history"] == first["history"]
    assert second["test_acc"] == first["test_acc"]
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])


def test_checkpoint_every(one_batch_split, tmp_path):
    ds, split = one_batch_split
    resume = str(tmp_path / "r.pt")
    train.train_run(config(epochs=3, checkpoint_every=2), split, ds.num_classes, resume)
    assert checkpoints.load(resume)["epoch"] == 2
    resume2 = str(tmp_path / "r2.pt")
    train.train_run(config(epochs=2, checkpoint_every=2), split, ds.num_classes, resume2)
    assert not os.path.exists(resume2)  # its only multiple of 2 is the last epoch


def test_resume_file_for_another_config_is_ignored(one_batch_split, tmp_path, capsys):
    ds, split = one_batch_split
    resume = str(tmp_path / "run.resume.pt")
    train.train_run(config(epochs=2), split, ds.num_classes, resume, "a")
    capsys.readouterr()
    rec = train.train_run(config(epochs=2, lr=2e-4), split, ds.num_classes, resume, "b")
    captured = capsys.readouterr()
    assert "ignoring" in captured.err and "resuming" not in captured.out + captured.err
    assert rec["epochs_completed"] == 2 and rec["status"] == "completed"


def test_a_run_that_diverges_is_not_trained_again_with_the_runs_resumed_at_its_epoch(one_batch_split, tmp_path,
                                                                                     monkeypatch):
    """Runs resumed from different epochs train in turn, earliest first. Run a starts afresh and
    diverges in epoch 2, so it stops at epoch 1, where run b resumes: b then trains alone, from its
    own resume file, and a is not trained again."""
    ds, split = one_batch_split
    resume = str(tmp_path / "b.resume.pt")
    alone = train.train_run(config(seed=1), split, ds.num_classes, resume)  # leaves its epoch-1 resume file
    real, trained = train.train_one_epoch, []

    def epoch(step, model, loader, seeds, e, *args):
        trained.append((list(seeds), e))
        totals = real(step, model, loader, seeds, e, *args)
        return [[math.nan, c] if (s, e) == (0, 1) else [loss, c] for s, (loss, c) in zip(seeds, totals)]
    monkeypatch.setattr(train, "train_one_epoch", epoch)
    a, b = train.train_group([config(seed=0), config(seed=1)], split, ds.num_classes, [None, resume], ["a", "b"])
    assert trained == [([0], 0), ([0], 1), ([1], 1)]
    assert a["status"] == "diverged" and a["epochs_completed"] == 1
    assert b["status"] == "completed" and b["history"] == alone["history"] and b["test_acc"] == alone["test_acc"]


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1e12), ("adam", 1e6)])
def test_huge_learning_rate_diverges(tiny_split, capsys, optimizer, lr):
    ds, split = tiny_split
    rec = train.train_run(config(epochs=3, optimizer=optimizer, lr=lr), split, ds.num_classes, None, "boom")
    assert rec["status"] == "diverged"
    assert rec["test_acc"] is None
    assert rec["epochs_completed"] < 3
    assert all(math.isfinite(v) for v in rec["history"]["loss"])  # the non-finite epoch is not recorded
    assert "diverged" in capsys.readouterr().out


def test_bf16_autocast_on_cpu(tiny_split):
    ds, split = tiny_split
    rec = train.train_run(config(epochs=1, precision="bf16"), split, ds.num_classes)
    assert rec["status"] == "completed" and math.isfinite(rec["history"]["loss"][0])
    assert all(v.dtype == torch.float32 for v in rec["model"].values())  # weights stay fp32


def test_a_sweep_on_the_cpu_keeps_freed_memory_for_the_next_step():
    """Every step frees and allocates again the same large tensors; glibc's default hands blocks
    over 32 MB back to the system and takes them again zeroed, a page fault per 4 KB page.
    After tune_backends(cpu), as a sweep calls it, allocating the same size again reuses the
    freed memory: once the heap has grown to fit (the first few allocations, how many depends on
    the heap's layout), five more allocations fault in fewer pages than one allocation has."""
    import subprocess
    import sys
    import ctypes
    from conftest import ROOT
    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc: the C library has no mallopt, and nothing changes")
    code = f"""import resource, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import train  # as a sweep does: its imports shape the heap
from core import device
device.tune_backends(torch.device("cpu"))
for _ in range(6):  # the heap grows to fit
    t = torch.ones(30_000_000)  # 120 MB; fc1's weight at 227 px is 151 MB
    del t
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    t = torch.ones(30_000_000)
    del t
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    pages = 120_000_000 // 4096  # per allocation: 5 x this without the setting
    assert faults < pages, f"{faults} page faults for 5 allocations of {pages} pages"
