"""Behaviours that decide a study's numbers, each pinned by a test built so that it
cannot pass by coincidence: a partial last batch, a best epoch that is not the last,
a tie, a resume between the best epoch and the end, a group with a member held
elsewhere, an asymmetric confusion matrix, a validation ranking that disagrees with
the test ranking. Each was written against a mutant in tests/mutants.py (issue 20)
and fails with it."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import data
from core import results
from core import stats
from core import storage
import sweep
import train
from core import disk
from alexnet import AlexNet
from conftest import load_results, one_batch, run_config, run_script, tiny_argv, tiny_split_of
from core.fused import FusedAlexNet


@pytest.fixture(scope="module")
def split24(mnist_dir):
    """24 training images in batches of 16: the last batch holds 8."""
    return tiny_split_of(mnist_dir, "full", 24, 16, 16)


def config(**changes):
    return run_config(**{"train_size": 24, "epochs": 2, **changes})


@pytest.fixture(scope="module")
def one_epoch(split24):
    """The record of config(epochs=1) trained alone: the weights every run of config() has
    after its first epoch (shared by the tests that read them)."""
    ds, split = split24
    return train.train_run(config(epochs=1), split, ds.num_classes)



def fingerprint(model, k: int) -> float:
    """A number that differs for any two sets of weights: stands in for a test accuracy,
    so that 'the best epoch's' and 'the last epoch's' can never coincide."""
    return squash(float(train._unwrapped(model).member_tensors(k)["fc3.bias"].detach().double().sum()))


def squash(x: float) -> float:
    """x mapped one to one into (0, 1), where records keep accuracies."""
    return 0.5 + math.atan(x) / math.pi


def scripted_evaluate(monkeypatch, split, val_accs, interrupt_at=None):
    """train.evaluate with validation accuracies from val_accs (one list per epoch) and test
    'accuracies' that are each member's fingerprint; the interrupt_at-th validation raises
    KeyboardInterrupt."""
    val_accs, calls = iter(val_accs), []

    def evaluate(model, loader, precision):
        if loader is split.val:
            calls.append(1)
            if len(calls) == interrupt_at:
                raise KeyboardInterrupt
            return next(val_accs)
        if loader is split.test:
            return [fingerprint(model, k) for k in range(train._unwrapped(model).k)]
        raise AssertionError("only validation and test are evaluated with --train-acc epoch")

    monkeypatch.setattr(train, "evaluate", evaluate)


# -- the last, partial batch --------------------------------------------------------------

def test_the_last_partial_batch_is_the_mean_over_its_own_images(split24):
    """Two epochs of SGD over 16 + 8 images against a plain loop: each step's loss is
    the mean over its own batch (the 8-image batch weighs its images 1/8), the epoch loss
    and training accuracy are over the 24 images, and epoch e draws the order of epoch e."""
    ds, split = split24
    cfg = config(optimizer="sgd", lr=0.05, seed=3)
    record = train.train_run(cfg, split, ds.num_classes)

    train.seed_everything(cfg["seed"])
    model = AlexNet(ds.num_classes, "relu", 0.0, image_size=67)
    optimizer = train.make_optimizer("sgd", model.parameters(), cfg["lr"])
    losses, accs, sizes = [], [], []
    for epoch in range(2):
        total, correct = 0.0, 0
        for x, y in split.train.batches(cfg["seed"], epoch):
            logits = model(x)
            loss = F.cross_entropy(logits, y)  # the mean over this batch's images
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            sizes.append(len(y))
        losses.append(total / 24)
        accs.append(correct / 24)
    assert sizes == [16, 8] * 2
    assert record["history"]["loss"] == pytest.approx(losses, rel=1e-5)
    assert record["history"]["train_acc"] == accs
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(record["model"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)


# -- the best validation epoch ------------------------------------------------------------

def test_test_acc_at_best_is_the_best_epochs_when_it_comes_before_the_last(mnist_dir, tmp_path, monkeypatch):
    """Best validation at epoch 1 of 2: the record's and .best.pt's test accuracy are those of
    epoch 1's weights, the .pt's those of epoch 2's."""
    real_split, splits, calls = train.Split, [], []
    monkeypatch.setattr(train, "Split", lambda *a, **k: splits.append(real_split(*a, **k)) or splits[-1])

    def evaluate(model, loader, precision):
        if loader is splits[0].val:
            calls.append(1)
            return [0.9] if len(calls) == 1 else [0.4]
        return [fingerprint(model, k) for k in range(train._unwrapped(model).k)]

    monkeypatch.setattr(train, "evaluate", evaluate)
    code, _, err = run_script("main_learning_rate", ["--values", "1e-3",
                                                     *one_batch(tiny_argv(mnist_dir, tmp_path, epochs=2))])
    assert code == 0, err
    (run,) = load_results(tmp_path, "learning_rate")["runs"]
    assert run["best_epoch"] == 1 and run["best_val_acc"] == 0.9
    models = tmp_path / "models" / "learning_rate"
    last = torch.load(models / "lr_0.001.pt", weights_only=True)
    best = torch.load(models / "lr_0.001.best.pt", weights_only=True)
    of = lambda ckpt: squash(float(ckpt["model"]["fc3.bias"].double().sum()))
    assert of(best) != of(last)
    assert run["test_acc_at_best"] == pytest.approx(of(best), abs=1e-12) == best["test_acc"]
    assert run["test_acc"] == pytest.approx(of(last), abs=1e-12) == last["test_acc"]
    assert best["epoch"] == 1


def test_ties_in_validation_accuracy_keep_the_first_epoch(split24, one_epoch, monkeypatch):
    ds, split = split24
    scripted_evaluate(monkeypatch, split, [[0.5], [0.5]])
    (record,) = train.train_group([config(epochs=2)], split, ds.num_classes)
    assert record["best_epoch"] == 1
    for name, tensor in one_epoch["model"].items():
        torch.testing.assert_close(record["best_model"][name], tensor, rtol=1e-6, atol=0, msg=name)
    assert record["test_acc_at_best"] == pytest.approx(squash(float(one_epoch["model"]["fc3.bias"].double().sum())),
                                                       abs=1e-12)
    assert record["test_acc_at_best"] != record["test_acc"]


def test_after_a_resume_the_best_epoch_is_still_the_best_epoch(split24, one_epoch, tmp_path, monkeypatch):
    """Best at epoch 1, resume file written after epoch 2, interrupted in epoch 3: the resumed
    run's best weights and test_acc_at_best are epoch 1's (those of the run stopped after one
    epoch, one_epoch), not epoch 2's."""
    ds, split = split24
    cfg = config(epochs=3)
    resume = str(tmp_path / "run.resume.pt")
    with monkeypatch.context() as m:
        scripted_evaluate(m, split, [[0.9], [0.4]], interrupt_at=3)
        with pytest.raises(KeyboardInterrupt):
            train.train_group([cfg], split, ds.num_classes, [resume])
    assert torch.load(resume, weights_only=True)["epoch"] == 2
    with monkeypatch.context() as m:
        scripted_evaluate(m, split, [[0.5]])
        (resumed,) = train.train_group([cfg], split, ds.num_classes, [resume])
    assert resumed["best_epoch"] == 1 and resumed["history"]["val_acc"] == [0.9, 0.4, 0.5]
    for name, tensor in one_epoch["model"].items():
        torch.testing.assert_close(resumed["best_model"][name], tensor, rtol=1e-6, atol=0, msg=name)
    assert resumed["test_acc_at_best"] == pytest.approx(squash(float(one_epoch["model"]["fc3.bias"].double().sum())),
                                                        abs=1e-12)
    assert resumed["test_acc_at_best"] != resumed["test_acc"]


# -- fused groups -------------------------------------------------------------------------

def test_fused_groups_are_never_larger_than_k_and_even(tmp_path):
    """Every group within the memory budget --fuse K sets, as few groups as K allows, sizes
    differing by at most one, in sweep order."""
    for n in range(1, 14):
        jobs = sweep.plan([(f"s{i}", {}) for i in range(n)], config(), 1)
        for k in range(1, 7):
            sizes = [len(g) for g in sweep.make_groups(jobs, k, disk.resume_epochs(str(tmp_path), jobs))]
            assert max(sizes) <= k and len(sizes) == -(-n // k) and max(sizes) - min(sizes) <= 1, (n, k, sizes)
            assert [j for g in sweep.make_groups(jobs, k, disk.resume_epochs(str(tmp_path), jobs)) for j in g] == jobs


def test_fused_dropout_scales_as_nn_dropout():
    """Kept values are x / (1 - p), as nn.Dropout's (tested at p = 0.25, where dividing by p
    would differ); a member with p = 0 is untouched; nothing is dropped in eval mode."""
    members = [AlexNet(10, "relu", 0.25, image_size=67), AlexNet(10, "relu", 0.0, image_size=67)]
    model = FusedAlexNet(members, ["relu", "relu"], [0.25, 0.0], [torch.Generator().manual_seed(i) for i in (0, 1)])
    x = torch.full((2, 64, 100), 3.0)
    model.train()
    out = model.dropout(x)
    reference = nn.Dropout(0.25).train()(x[0])
    assert set(out[0].unique().tolist()) == set(reference.unique().tolist()) == {0.0, 4.0}
    assert 0.15 < (out[0] == 0).float().mean() < 0.35
    assert torch.equal(out[1], x[1])
    model.eval()
    assert torch.equal(model.dropout(x), x)


# -- records under their own names --------------------------------------------------------

def test_each_record_is_its_own_runs_when_a_member_is_held_elsewhere(mnist_dir, tmp_path):
    """Three runs fused, the middle one claimed by another process: the other two are each
    recorded under their own name, config and checkpoint file. Kernels named (their timing is
    not this test's subject); two training batches, so that the two runs' losses differ."""
    held = storage.Claim(str(tmp_path / "models" / "learning_rate" / ".lr_0.0003.lock"))
    assert held.acquire()
    try:
        code, out, err = run_script("main_learning_rate", ["--values", "1e-4", "3e-4", "1e-3", "--fuse", "3",
                                                           "--kernels", "grouped", *tiny_argv(mnist_dir, tmp_path)])
    finally:
        held.release()
    assert code == 0, err
    assert "lr_0.0003: being trained by another process" in out
    runs = {r["name"]: r for r in load_results(tmp_path, "learning_rate")["runs"]}
    assert sorted(runs) == ["lr_0.0001", "lr_0.001"]
    for name, run in runs.items():
        lr = float(name[3:])
        assert run["params"] == {"lr": lr} and run["config"]["lr"] == lr
        assert run["fused_with"] == [f"{other} seed 0" for other in runs if other != name]
        ckpt = torch.load(tmp_path / "models" / "learning_rate" / f"{name}.pt", weights_only=True)
        assert ckpt["name"] == name and ckpt["config"]["lr"] == lr
        assert ckpt["history"] == run["history"] and ckpt["test_acc"] == run["test_acc"]
    assert runs["lr_0.0001"]["history"]["loss"] != runs["lr_0.001"]["history"]["loss"]
    assert not (tmp_path / "models" / "learning_rate" / "lr_0.0003.pt").exists()


def test_a_run_is_claimed_while_it_trains_and_released_after(mnist_dir, tmp_path, monkeypatch):
    """While a run trains no other process can take it; once it is recorded anyone can."""
    lock = tmp_path / "models" / "learning_rate" / ".lr_0.001.lock"
    taken_while_training = []
    real = train.train_group

    def train_group(configs, *args, **kwargs):
        other = storage.Claim(str(lock))  # another process's attempt (flock: per open file)
        taken_while_training.append(other.acquire())
        other.release()
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(train, "train_group", train_group)
    code, _, err = run_script("main_learning_rate",
                              ["--values", "1e-3", *one_batch(tiny_argv(mnist_dir, tmp_path))])
    assert code == 0, err
    assert taken_while_training == [False]
    after = storage.Claim(str(lock))
    assert after.acquire()
    after.release()


def test_a_run_finished_meanwhile_by_another_process_is_not_retrained(mnist_dir, tmp_path, monkeypatch):
    """A run recorded by another process after this one planned its groups is skipped, and
    that process's record is kept."""
    real = sweep.make_groups

    def make_groups(jobs, k, models_dir):
        job = next(j for j in jobs if j.name == "lr_0.001")
        results.write_record(str(tmp_path), "learning_rate", {
            "name": job.name, "params": job.params, "seed": job.config["seed"], "config": job.config,
            "status": "completed", "test_acc": 0.125, "best_val_acc": 0.25,
            "history": {"loss": [2.0], "train_acc": [0.25], "val_acc": [0.25]}})
        return real(jobs, k, models_dir)

    monkeypatch.setattr(sweep, "make_groups", make_groups)
    code, out, err = run_script("main_learning_rate", ["--values", "1e-4", "1e-3", "--fuse", "2",
                                                       *one_batch(tiny_argv(mnist_dir, tmp_path))])
    assert code == 0, err
    assert "lr_0.001: finished meanwhile by another process; skipping" in out
    runs = {r["name"]: r for r in load_results(tmp_path, "learning_rate")["runs"]}
    assert runs["lr_0.001"]["test_acc"] == 0.125 and runs["lr_0.0001"]["fused_with"] == []
    assert not (tmp_path / "models" / "learning_rate" / "lr_0.001.pt").exists()


# -- evaluation ---------------------------------------------------------------------------

def test_confusion_rows_are_the_true_class_and_per_class_is_recall():
    import evaluate
    labels = torch.tensor([0, 0, 0, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2])
    logits = F.one_hot(predicted, 3).float()
    summary = evaluate.summarize(logits, labels, ["a", "b", "c"])
    assert summary["confusion"] == [[1, 2, 0], [0, 1, 0], [0, 0, 1]]
    assert summary["per_class"] == {"a": pytest.approx(1 / 3), "b": 1.0, "c": 1.0}
    assert summary["test_acc"] == pytest.approx(3 / 5)


# -- data order ---------------------------------------------------------------------------

def test_no_seed_and_epoch_repeat_another_seeds_epoch():
    """Seed s at epoch e + 1 must not be seed s + 1 at epoch e: every (seed, epoch) of a
    3-seed, 25-epoch study draws its own order."""
    n = 64
    loader = data.DeviceLoader(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.arange(n), torch.arange(n),
                               n, 4, torch.device("cpu"), train=True)
    orders = {}
    for seed in range(4):
        for epoch in range(25):
            ((_, y),) = loader.batches(seed, epoch)
            orders.setdefault(tuple(y.tolist()), []).append((seed, epoch))
    assert all(len(v) == 1 for v in orders.values()), [v for v in orders.values() if len(v) > 1][:3]


# -- choosing the best setting ------------------------------------------------------------

def run(name, seed, val, test, status="completed"):
    return {"name": name, "params": {"activation": name}, "seed": seed, "status": status, "config": {},
            "test_acc": test, "best_val_acc": val,
            "history": {"loss": [1.0], "train_acc": [0.5], "val_acc": [val]}}


def test_the_best_setting_is_chosen_on_validation_never_on_test():
    """a leads on validation, b on test; c's only high validation comes from a diverged run,
    which never counts; comparisons pair the seeds the settings share."""
    runs = [run("a", s, 0.80 + 0.01 * s, 0.50 + 0.02 * s) for s in range(3)]
    runs += [run("b", s, 0.70, 0.90 - 0.01 * s * s) for s in range(3)]
    runs += [run("c", 0, 0.75, 0.60), run("c", 1, 0.99, None, "diverged")]
    rows, best = stats.summarize({"experiment": "activation", "runs": runs})
    assert best["setting"] == "a"
    rows = {r["setting"]: r for r in rows}
    assert rows["c"]["n"] == 1 and rows["c"]["best_val_acc_mean"] == 0.75
    b = rows["b"]["vs_best"]
    assert b["n"] == 3
    assert b["mean_diff"] == pytest.approx(((0.90 - 0.50) + (0.89 - 0.52) + (0.86 - 0.54)) / 3)


# -- storage ------------------------------------------------------------------------------

def test_a_file_is_on_disk_before_it_replaces_the_previous_one(tmp_path, monkeypatch):
    """fsync of the temporary file comes before the rename: a power cut leaves the old file
    or the new one, never an empty one."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append(("replace", str(a))) or real_replace(a, b))
    storage.atomic_write_text(str(tmp_path / "f.json"), "new")
    assert [c[0] for c in calls] == ["fsync", "replace"] and calls[0][1] == calls[1][1]
    assert (tmp_path / "f.json").read_text() == "new"


def test_a_lock_whose_file_was_removed_is_taken_on_the_new_file(tmp_path, monkeypatch):
    """Its holder removes a lock file as it releases it; a waiter that then gets the lock on
    the removed file must take it again on the current one, or two processes hold 'it'."""
    path = str(tmp_path / ".x.lock")
    real_flock, removed = storage.fcntl.flock, []

    def flock(f, op):
        if not removed:  # the holder releases (and removes the file) just as we lock
            removed.append(1)
            os.remove(path)
        return real_flock(f, op)

    monkeypatch.setattr(storage.fcntl, "flock", flock)
    f = storage._lock(path, wait=True)
    try:
        assert os.path.exists(path) and os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
    finally:
        storage._unlock(f, path)


# -- checkpoints --------------------------------------------------------------------------

class _Code:
    def __reduce__(self):
        return os.getcwd, ()  # any callable: weights_only loading must refuse to call it


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    from core import checkpoints
    path = tmp_path / "evil.pt"
    torch.save({"model": _Code()}, path)
    with pytest.raises(checkpoints.CheckpointError, match="evil.pt"):
        checkpoints.load(str(path))


# -- results files ------------------------------------------------------------------------

def test_results_files_are_standard_json_with_nan_and_infinity_as_null(tmp_path):
    """A loss of NaN or infinity (a diverging epoch, a timing divided by zero) is written as
    null: Python's json would write NaN, which JSON readers elsewhere refuse."""
    import json
    run = {"name": "a", "params": {}, "seed": 0, "status": "diverged", "config": {}, "test_acc": None,
           "best_val_acc": 0.5, "history": {"loss": [2.0, float("nan")], "train_acc": [0.5, float("inf")],
                                            "val_acc": [0.5, None]}}
    path = results.write_record(str(tmp_path), "x", run)

    def refuse(constant):
        raise ValueError(f"{constant} is not standard JSON")

    saved = json.loads(open(path).read(), parse_constant=refuse)
    assert saved["history"] == {"loss": [2.0, None], "train_acc": [0.5, None], "val_acc": [0.5, None]}


def test_a_runs_own_record_wins_over_an_older_merged_results_file(tmp_path):
    """results/<experiment>.json is derived; each run's record is the truth: a run recorded
    again (retrained, or finished by another process) replaces what the merged file says."""
    old = run("a", 0, 0.5, 0.1)
    new = run("a", 0, 0.6, 0.2)
    results.write_record(str(tmp_path), "x", old)
    results.write_results(str(tmp_path), "x")
    results.write_record(str(tmp_path), "x", new)
    (read,) = results.read_results(str(tmp_path), "x")["runs"]
    assert read["test_acc"] == 0.2
    assert results.write_results(str(tmp_path), "x")["runs"][0]["test_acc"] == 0.2


def test_finished_runs_are_left_out_before_the_groups_are_made(mnist_dir, tmp_path):
    """A rerun plans only what is missing: the runs on either side of a finished one are fused
    together, not each left alone in a group with it."""
    argv = one_batch(tiny_argv(mnist_dir, tmp_path))
    code, _, err = run_script("main_learning_rate", ["--values", "3e-4", *argv])
    assert code == 0, err
    code, out, err = run_script("main_learning_rate", ["--values", "1e-4", "3e-4", "1e-3", "--fuse", "2",
                                                       "--kernels", "split", *argv])
    assert code == 0, err
    assert "lr_0.0003: already completed" in out and "fused: 2 runs at once" in out
    runs = {r["name"]: r for r in load_results(tmp_path, "learning_rate")["runs"]}
    assert runs["lr_0.0001"]["fused_with"] == ["lr_0.001 seed 0"] and runs["lr_0.0003"]["fused_with"] == []
