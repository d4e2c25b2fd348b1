"""Behaviour a user relies on that a one-line slip would break silently: each test
here was written against a bug that passed the rest of the suite (issue 13's
mutation check) and fails with it."""
import math
import os
import re

import pytest
import torch

import data
import sweep
import train
from core.flags import QUICK
from alexnet import AlexNet
from conftest import ROOT, load_results, one_batch, run_config, run_script, tiny_argv, tiny_split_of
from core.fused import FusedAlexNet


@pytest.fixture(scope="module")
def tiny_split(mnist_dir):
    """16 training images (an epoch of one batch: what the tests below check does not depend on the
    number of batches), 64 validation and 40 test images."""
    return tiny_split_of(mnist_dir, "full", 16, 64, 40)


def config(**changes):
    return run_config(**{"epochs": 1, "train_size": 16, "val_size": 64, "test_size": 40, **changes})


# 1. Accuracy is measured with dropout off: the original study's slip

def test_accuracy_is_measured_in_eval_mode_with_dropout_off(tiny_split):
    ds, split = tiny_split
    group = train.Group([config(dropout=0.9, seed=3)], ds.num_classes, torch.device("cpu"))
    group.model.train()  # as after a training epoch
    measured = train.evaluate(group.model, split.val, "fp32")[0]
    plain = AlexNet(ds.num_classes, "relu", 0.9, image_size=67)
    plain.load_state_dict(group.model.member_state_dict(0))
    plain.eval()
    with torch.no_grad():
        x = data.transform_batch(ds.train_images[split.val.indices], 67)
        expected = (plain(x).argmax(1) == ds.train_labels[split.val.indices]).float().mean().item()
    assert measured == pytest.approx(expected, abs=1e-9)
    assert train.evaluate(group.model, split.val, "fp32")[0] == measured  # no random masks: repeatable


# 2. An infinite loss is divergence, like NaN

@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_loss_that_is_not_finite_stops_the_run_as_diverged(tiny_split, monkeypatch, bad):
    ds, split = tiny_split
    real = train.train_one_epoch
    monkeypatch.setattr(train, "train_one_epoch",
                        lambda *a, **k: [[bad, correct] for _, correct in real(*a, **k)])
    (record,) = train.train_group([config(epochs=2)], split, ds.num_classes)
    assert record["status"] == "diverged" and record["epochs_completed"] == 0 and record["test_acc"] is None


# 3. best_val_acc is the best epoch's, not the last epoch's

def test_best_val_acc_is_the_best_epoch(tiny_split, monkeypatch):
    ds, split = tiny_split
    scripted = iter([[0.5], [0.8], [0.6]])
    monkeypatch.setattr(train, "evaluate", lambda model, loader, precision:
                        next(scripted) if loader is split.val else [0.3])
    (record,) = train.train_group([config(epochs=3)], split, ds.num_classes)
    assert record["history"]["val_acc"] == [0.5, 0.8, 0.6]
    assert record["best_val_acc"] == 0.8


# 4. Dropout sits before fc1, fc2 and fc3, never on the logits

@pytest.mark.parametrize("fused", [False, True])
def test_dropout_never_touches_the_logits(fused):
    torch.manual_seed(0)
    model = AlexNet(10, "relu", 0.9, image_size=67)
    if fused:
        model = FusedAlexNet([model], ["relu"], [0.9], [torch.Generator().manual_seed(0)])
    model.train()
    with torch.no_grad():
        logits = model(torch.randn(16, 3, 67, 67))
    # dropout on the logits would zero about 90% of these 160; a linear layer's outputs are never exactly 0
    assert (logits == 0).float().mean().item() == 0.0


def test_dropout_drops_the_inputs_of_fc1_fc2_and_fc3():
    torch.manual_seed(0)
    model = AlexNet(10, "tanh", 0.5, image_size=67)  # tanh: only dropout makes exact zeros
    seen = {}
    for name in ("fc1", "fc2", "fc3"):
        getattr(model, name).register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, 67, 67))
    for name in ("fc1", "fc2", "fc3"):
        assert 0.4 < (seen[name] == 0).float().mean().item() < 0.6, name


# 5. The --quick preset is the one the README and docs/flags.md document

def test_the_quick_preset_is_the_documented_one():
    readme = open(os.path.join(ROOT, "README.md")).read()
    flags = open(os.path.join(ROOT, "docs", "flags.md")).read()
    row = next(line for line in flags.splitlines() if line.startswith("| `--quick` |"))
    size, train_n, val_n, test_n, epochs = re.search(
        r"image size (\d+), ([\d,]+) / ([\d,]+) / ([\d,]+) images, (\d+) epochs", row).groups()
    documented = dict(image_size=int(size), train_size=int(train_n.replace(",", "")),
                      val_size=int(val_n.replace(",", "")), test_size=int(test_n.replace(",", "")),
                      epochs=int(epochs))
    assert QUICK == documented
    assert "5 runs on 1,000 training / 250 validation / 1,000 test images at 67 px for 5 epochs" in \
        " ".join(readme.split())


# 6. Files are replaced whole: a write that fails leaves the previous file

def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary(tmp_path):
    from core import storage
    path = tmp_path / "results.json"
    storage.atomic_write_text(str(path), "previous")

    def half_then_fail(f):
        f.write("half of the new ")
        raise OSError(28, "No space left on device")

    with pytest.raises(storage.WriteError, match="No space left on device"):
        storage.atomic_write(str(path), half_then_fail, binary=False)
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["results.json"]


def test_results_and_csv_go_through_the_atomic_writer(tmp_path, monkeypatch):
    from core import results
    from core import storage
    written = []
    real = storage.atomic_write
    monkeypatch.setattr(storage, "atomic_write", lambda path, *a, **k: written.append(path) or real(path, *a, **k))
    run = {"name": "a", "params": {}, "seed": 0, "status": "completed", "config": {}, "test_acc": 0.5,
           "best_val_acc": 0.5, "history": {"loss": [1.0], "train_acc": [0.5], "val_acc": [0.5]}}
    results.write_record(str(tmp_path), "x", run)
    results.write_results(str(tmp_path), "x")
    assert sorted(os.path.basename(p) for p in written) == ["a_seed0.json", "x.csv", "x.json"]


# 7. A failed run keeps its resume file, so the rerun resumes instead of starting over

def test_a_run_failing_after_a_checkpoint_resumes_on_rerun(mnist_dir, tmp_path, monkeypatch):
    real = train.evaluate
    calls = []

    def failing(model, loader, precision):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's validation, after epoch 1's resume checkpoint
            raise RuntimeError("simulated out of memory")
        return real(model, loader, precision)

    argv = one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path, epochs=2)])
    with monkeypatch.context() as m:
        m.setattr(train, "evaluate", failing)
        code, out, err = run_script("main_learning_rate", argv)
    assert code == 1 and "simulated out of memory" in err
    assert (tmp_path / "models" / "learning_rate" / "lr_0.0001.resume.pt").exists()
    code, out, err = run_script("main_learning_rate", argv)
    assert code == 0, err
    assert "resuming from epoch 2 of 2" in out
    assert load_results(tmp_path, "learning_rate")["runs"][0]["status"] == "completed"


# Further: what a user of several processes relies on

def test_the_same_run_is_recognised_whatever_the_checkpoint_cadence():
    from core import results
    a = config()
    assert results.same_config(a, {**a, "checkpoint_seconds": 600, "checkpoint_every": 3})
    assert not results.same_config(a, {**a, "lr": 2e-4})
    assert not results.same_config(a, {**a, "precision": "bf16"})


def test_shards_together_are_the_whole_sweep_and_never_overlap():
    jobs = sweep.plan([(f"s{i}", {}) for i in range(7)], config(), 3)
    shares = [jobs[i - 1::4] for i in range(1, 5)]
    stems = [job.stem for share in shares for job in share]
    assert sorted(stems) == sorted(job.stem for job in jobs) and len(set(stems)) == len(stems)


def test_work_is_balanced_over_ranks():
    jobs = sweep.plan([(f"s{i}", {"epochs": e}) for i, e in enumerate([10, 10, 1, 1, 1, 1])], config(), 1)
    shares = sweep.assign(jobs, 2, lambda job: job.config["epochs"])
    assert sorted(sum(job.config["epochs"] for job in share) for share in shares) == [12, 12]
