"""Every main_*.py end to end on tiny data (67 px, a few dozen images, 1-2 epochs, fp32 on
the CPU): checkpoints, results files, plots and table; reruns, --fresh, --seeds; CIFAR-10
and image-folder data; missing and corrupt data; divergence and failure isolation.

Where what a test checks does not depend on how many batches an epoch has, its runs train on 16
images, one batch an epoch (conftest.one_batch)."""
import csv
import json
import math
import os
import shutil

import pytest
import torch

from core import checkpoints
import data
import train
from alexnet import AlexNet
from conftest import (as_group, one_batch, real_train_run, load_results, run_script, skip_fsync, tiny_argv,
                      whole_and_cut_lr_run, write_mnist_like)

pytestmark = pytest.mark.slow  # every script end to end, whole sweeps

CURVES = ("loss", "train_acc", "val_acc", "test_acc")


def check_outputs(out, experiment, names, epochs, stdout, num_classes=10, statuses=None):
    """The files and table a finished sweep leaves; returns the results dict."""
    results = load_results(out, experiment)
    assert results["experiment"] == experiment
    runs = {r["name"]: r for r in results["runs"]}
    assert sorted(runs) == sorted(names)
    for name in names:
        run = runs[name]
        status = (statuses or {}).get(name, "completed")
        assert run["status"] == status
        assert set(run) >= {"name", "params", "seed", "history", "test_acc", "status"}
        assert set(run["history"]) == {"loss", "train_acc", "val_acc"}
        if status == "completed":
            assert [len(run["history"][k]) for k in ("loss", "train_acc", "val_acc")] == [epochs] * 3
            assert 0 <= run["test_acc"] <= 1
            assert all(math.isfinite(v) for v in run["history"]["loss"])
        # the checkpoint: plain state_dict keys, config, history and test accuracy (its tensors mapped
        # from the file, not read: only their names and shapes are checked)
        ckpt = torch.load(os.path.join(out, "models", experiment, f"{name}.pt"), weights_only=True,
                          map_location="cpu", mmap=True)
        assert set(ckpt) >= {"model", "config", "history", "test_acc"}
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
        assert ckpt["history"] == run["history"] and ckpt["test_acc"] == run["test_acc"]
        cfg = ckpt["config"]
        for key, value in run["params"].items():
            assert cfg[key] == value
        # the network its config describes takes the state_dict: the same names and shapes, no key
        # missing or left over (strict loading checks these whatever the device; built on the meta
        # device, it skips initialising 22M weights that the checkpoint's replace)
        with torch.device("meta"):
            model = AlexNet(num_classes=num_classes, activation=cfg["activation"], dropout=cfg["dropout"],
                            image_size=cfg["image_size"])
        model.load_state_dict(ckpt["model"], assign=True)
        assert not os.path.exists(os.path.join(out, "models", experiment, f"{name}.resume.pt"))
        # the table on stdout has a row per run
        assert any(line.startswith(name + " ") and status in line for line in stdout.splitlines())
    with open(os.path.join(out, "results", f"{experiment}.csv")) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["name"] for r in rows) == sorted(names)
    for row in rows:
        assert row["status"] == runs[row["name"]]["status"]
        if row["status"] == "completed":
            assert int(row["epochs_completed"]) == epochs
            assert float(row["test_acc"]) == pytest.approx(runs[row["name"]]["test_acc"])
    for curve in CURVES:
        png = os.path.join(out, "images", f"{experiment}_{curve}.png")
        assert os.path.getsize(png) > 1000
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return results


# ---------------------------------------------------------------------------
# Each script

def test_learning_rate_end_to_end(lr_sweep):
    assert lr_sweep["code"] == 0, lr_sweep["stderr"]
    results = check_outputs(lr_sweep["out"], "learning_rate", ["lr_0.0001", "lr_0.001"], 2, lr_sweep["stdout"])
    assert [r["params"] for r in results["runs"]] == [{"lr": 1e-4}, {"lr": 1e-3}]
    assert all(r["seed"] == 0 for r in results["runs"])
    assert "32 train / 16 val / 16 test images at 67 px" in lr_sweep["stdout"]
    assert "best val acc" in lr_sweep["stdout"] and "test acc" in lr_sweep["stdout"]


def test_results_json_is_standard_json(lr_sweep):
    text = open(os.path.join(lr_sweep["out"], "results", "learning_rate.json")).read()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


ACTIVATIONS = ["leakyrelu", "tanh", "elu"]  # elu: the run whose checkpoint docs/outputs.md loads


def script_argv(mnist_dir, out, values):
    return one_batch((["--values", *values] if values else []) + tiny_argv(mnist_dir, out, epochs=1))


@pytest.fixture(scope="module")
def activation_sweep(mnist_dir, tmp_path_factory):
    """main_activation end to end once, for test_script_end_to_end and the checkpoint snippet test:
    (its --out, (exit code, stdout, stderr))."""
    out = tmp_path_factory.mktemp("activation")
    with pytest.MonkeyPatch.context() as m:
        skip_fsync(m)
        made = run_script("main_activation", script_argv(mnist_dir, out, ACTIVATIONS))
    yield out, made
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("script, values, names", [
    ("main_weight_regularization", ["0,0", "5e-6,9.5e-5"], ["l1_0_l2_0", "l1_5e-06_l2_9.5e-05"]),
    ("main_activation", ACTIVATIONS, ACTIVATIONS),
    ("main_dropout", ["0", "0.25"], ["p0", "p0.25"]),
    ("main_consolidated", None, ["baseline", "consolidated"]),
    ("main_optimizer", ["adagrad", "adam:1e-4"], ["adagrad_lr0.01", "adam_lr0.0001"]),
])
def test_script_end_to_end(mnist_dir, tmp_path, request, script, values, names):
    experiment = script[len("main_"):]
    if script == "main_activation":  # run once for this test and the checkpoint snippet's
        out_dir, (code, out, err) = request.getfixturevalue("activation_sweep")
    else:
        out_dir = tmp_path
        code, out, err = run_script(script, script_argv(mnist_dir, out_dir, values))
    assert code == 0, err
    results = check_outputs(out_dir, experiment, names, 1, out)
    regime = "full" if experiment in ("dropout", "consolidated") else "subset"
    for run in results["runs"]:
        assert run["config"]["regime"] == regime and run["config"]["epochs"] == 1
        assert run["config"]["train_size"] == 16 and run["images"]["train"] == 16
        assert run["config"]["image_size"] == 67 and run["config"]["precision"] == "fp32"


def test_seeds_repeat_every_setting(mnist_dir, tmp_path):
    code, out, err = run_script("main_learning_rate",
                                one_batch(["--values", "1e-4", "--seeds", "2", "--seed", "5", *tiny_argv(mnist_dir, tmp_path)]))
    assert code == 0, err
    results = load_results(tmp_path, "learning_rate")
    assert sorted((r["name"], r["seed"]) for r in results["runs"]) == [("lr_0.0001", 5), ("lr_0.0001", 6)]
    assert sorted(os.listdir(tmp_path / "models" / "learning_rate")) == [
        "lr_0.0001_seed5.best.pt", "lr_0.0001_seed5.pt", "lr_0.0001_seed6.best.pt", "lr_0.0001_seed6.pt"]
    a, b = results["runs"]
    assert a["history"]["loss"] != b["history"]["loss"]  # different seeds, different runs
    assert "lr_0.0001 seed 5" in out and "lr_0.0001 seed 6" in out


# ---------------------------------------------------------------------------
# Reruns

def copy_out(src, dst):
    """A sweep's --out copied as the sweep left it, hard links kept (a run's .best.pt is a link
    to its .pt where its best epoch is its last)."""
    copied = {}

    def copy(s, d):
        inode = (os.stat(s).st_dev, os.stat(s).st_ino)
        if inode in copied:
            os.link(copied[inode], d)
        else:
            copied[inode] = shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=copy)


@pytest.fixture(scope="module")
def lr_runs(mnist_dir, tmp_path_factory):
    """conftest.whole_and_cut_lr_run once, with one batch an epoch, for the tests that copy its --outs
    (a rerun's and an interrupted sweep's, below): a 2-epoch learning-rate run (lr 1e-4) done whole,
    and the same run cut by Ctrl-C after epoch 1.
    A dict: argv (for an --out), whole (its --out), reference (its results entry), cut (the cut
    run's --out), resume (its resume file)."""
    folder = tmp_path_factory.mktemp("whole_and_cut")
    with pytest.MonkeyPatch.context() as m:
        skip_fsync(m)
        argv, reference, cut, resume = whole_and_cut_lr_run(mnist_dir, folder, m)
    yield dict(argv=argv, whole=folder / "whole", reference=reference, cut=cut, resume=resume)
    shutil.rmtree(folder, ignore_errors=True)  # about 0.4 GB of checkpoints


def test_rerun_skips_completed_runs_and_fresh_retrains(lr_runs, tmp_path):
    argv, out_dir = lr_runs["argv"], tmp_path / "out"
    copy_out(lr_runs["whole"], out_dir)  # the first sweep of this command, finished, as it left its --out
    first = load_results(out_dir, "learning_rate")
    model = out_dir / "models" / "learning_rate" / "lr_0.0001.pt"
    stamp = model.stat().st_mtime_ns

    code, out, _ = run_script("main_learning_rate", argv(out_dir))
    assert code == 0
    assert "skipping" in out and "epoch 1/2" not in out
    assert model.stat().st_mtime_ns == stamp
    assert load_results(out_dir, "learning_rate")["runs"] == first["runs"]
    assert "lr_0.0001" in out.split("skipping")[-1]  # still in the table

    code, out, _ = run_script("main_learning_rate", argv(out_dir) + ["--fresh"])
    assert code == 0
    assert "skipping" not in out and "lr_0.0001 epoch 1/2" in out
    assert model.stat().st_mtime_ns != stamp
    again = load_results(out_dir, "learning_rate")["runs"][0]
    assert again["history"] == first["runs"][0]["history"]  # deterministic retraining


def test_rerun_with_changed_settings_retrains_and_new_values_are_added(mnist_dir, tmp_path):
    code, _, _ = run_script("main_learning_rate", one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path)]))
    assert code == 0
    code, out, _ = run_script("main_learning_rate",
                              one_batch(["--values", "1e-4", "1e-3", *tiny_argv(mnist_dir, tmp_path, epochs=1)]))
    assert code == 0
    assert "lr_0.0001: already completed" in out and "lr_0.001 epoch 1/1" in out
    assert sorted(r["name"] for r in load_results(tmp_path, "learning_rate")["runs"]) == ["lr_0.0001", "lr_0.001"]
    # more epochs is another config: retrained, not skipped
    code, out, _ = run_script("main_learning_rate",
                              one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path, epochs=2)]))
    assert code == 0 and "skipping" not in out
    runs = {r["name"]: r for r in load_results(tmp_path, "learning_rate")["runs"]}
    assert len(runs["lr_0.0001"]["history"]["loss"]) == 2
    assert len(runs["lr_0.001"]["history"]["loss"]) == 1  # kept
    # the table lists only this invocation's runs
    table = out[out.index("hyperparameters"):]
    assert "lr_0.0001" in table and "lr_0.001 " not in table


# ---------------------------------------------------------------------------
# Other datasets

def test_cifar10_end_to_end(cifar10_dir, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_script("main_activation", ["--values", "relu", "--regime", "full",
                                                    *tiny_argv(cifar10_dir, out_dir, dataset="cifar10")])
    assert code == 0, err
    assert "on cifar10 from" in out and "32 train / 16 val / 16 test" in out
    check_outputs(str(out_dir), "activation", ["relu"], 1, out)


def test_image_folder_end_to_end(image_folder_dir, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_script("main_dropout", ["--values", "0.2", "--regime", "full",
                                                 *tiny_argv(image_folder_dir, out_dir, dataset="imagefolder")])
    assert code == 0, err
    # 36 training images, a tenth for validation
    assert "32 train / 3 val / 12 test" in out
    results = check_outputs(str(out_dir), "dropout", ["p0.2"], 1, out, num_classes=3)
    assert results["runs"][0]["params"] == {"dropout": 0.2}


# ---------------------------------------------------------------------------
# Missing and corrupt data, unavailable devices: exit 1, one line, nothing written

def assert_clean_failure(code, stdout, stderr, out_dir, *fragments):
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:") and "Traceback" not in stderr
    for fragment in fragments:
        assert str(fragment) in lines[0]
    assert not os.path.exists(out_dir) or os.listdir(out_dir) == []


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_data_exits_1_naming_the_path(tmp_path, monkeypatch, dataset):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))
    missing, out_dir = tmp_path / "missing", tmp_path / "out"
    code, out, err = run_script("main_learning_rate",
                                ["--values", "1e-4", *tiny_argv(missing, out_dir, dataset=dataset)])
    assert_clean_failure(code, out, err, out_dir, missing)


def test_missing_imagefolder_exits_1(tmp_path):
    code, out, err = run_script("main_learning_rate",
                                ["--values", "1e-4", *tiny_argv(tmp_path / "none", tmp_path / "out", dataset="imagefolder")])
    assert_clean_failure(code, out, err, tmp_path / "out", tmp_path / "none")


def test_truncated_gz_exits_1(tmp_path):
    write_mnist_like(tmp_path / "d", n_train=300, n_test=20)
    path = tmp_path / "d" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    code, out, err = run_script("main_learning_rate", ["--values", "1e-4", *tiny_argv(tmp_path / "d", tmp_path / "out")])
    assert_clean_failure(code, out, err, tmp_path / "out", path)


def test_corrupt_cifar_exits_1(tmp_path):
    from conftest import write_cifar
    write_cifar(tmp_path / "c", "cifar10")  # checksums cannot match the published ones
    code, out, err = run_script("main_learning_rate",
                                ["--values", "1e-4", *tiny_argv(tmp_path / "c", tmp_path / "out", dataset="cifar10")])
    assert_clean_failure(code, out, err, tmp_path / "out", "data_batch_1", "corrupt")


@pytest.mark.parametrize("device", ["nonsense", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU is present"))])
def test_unavailable_device_exits_2_before_loading_data(tmp_path, device):
    # the data folder is missing too: the device must be refused first, like every bad flag
    argv = ["--values", "1e-4", *tiny_argv(tmp_path / "no-data", tmp_path / "out"), "--device", device]
    code, out, err = run_script("main_learning_rate", argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--device" in lines[0] and device in lines[0] and "no-data" not in lines[0]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# Divergence and failure isolation

def test_divergence_is_recorded_and_the_sweep_goes_on(mnist_dir, tmp_path):
    code, out, err = run_script("main_optimizer",
                                ["--values", "sgd:1e12", "adam:1e-4", *tiny_argv(mnist_dir, tmp_path, epochs=2)])
    assert code == 0, err
    results = check_outputs(tmp_path, "optimizer", ["sgd_lr1e+12", "adam_lr0.0001"], 2, out,
                            statuses={"sgd_lr1e+12": "diverged"})
    runs = {r["name"]: r for r in results["runs"]}
    diverged = runs["sgd_lr1e+12"]
    assert diverged["test_acc"] is None
    assert diverged["epochs_completed"] < 2
    assert runs["adam_lr0.0001"]["status"] == "completed"
    row = next(line for line in out.splitlines() if line.startswith("sgd_lr1e+12 "))
    assert f"diverged at epoch {diverged['epochs_completed'] + 1}" in row
    # a diverged run is final: a rerun skips it
    code, out, _ = run_script("main_optimizer",
                              ["--values", "sgd:1e12", *tiny_argv(mnist_dir, tmp_path, epochs=2)])
    assert code == 0 and "already diverged" in out


def test_a_failing_run_is_recorded_and_the_others_complete(mnist_dir, tmp_path, monkeypatch):
    real = real_train_run()

    def flaky(config, split, num_classes, resume_path=None, desc="run"):
        if config["lr"] == 1e-3:
            raise RuntimeError("simulated device failure")
        return real(config, split, num_classes, resume_path, desc)

    monkeypatch.setattr(train, "train_group", as_group(flaky))
    argv = one_batch(["--values", "1e-3", "1e-4", *tiny_argv(mnist_dir, tmp_path)])
    code, out, err = run_script("main_learning_rate", argv)
    assert code != 0
    assert "simulated device failure" in err and "failed runs: lr_0.001" in err
    runs = {r["name"]: r for r in load_results(tmp_path, "learning_rate")["runs"]}
    assert runs["lr_0.001"]["status"] == "failed"
    assert runs["lr_0.001"]["error"] == "RuntimeError: simulated device failure"
    assert runs["lr_0.001"]["test_acc"] is None and runs["lr_0.001"]["history"]["loss"] == []
    assert runs["lr_0.0001"]["status"] == "completed" and len(runs["lr_0.0001"]["history"]["loss"]) == 1
    assert not os.path.exists(tmp_path / "models" / "learning_rate" / "lr_0.001.pt")
    assert os.path.exists(tmp_path / "models" / "learning_rate" / "lr_0.0001.pt")
    assert any(line.startswith("lr_0.001 ") and "failed" in line for line in out.splitlines())
    for curve in CURVES:
        assert os.path.exists(tmp_path / "images" / f"learning_rate_{curve}.png")
    # a rerun without the fault retrains only the failed run
    monkeypatch.setattr(train, "train_group", as_group(real))
    code, out, err = run_script("main_learning_rate", argv)
    assert code == 0, err
    assert "lr_0.0001: already completed" in out and "lr_0.001 epoch 1/1" in out
    runs = {r["name"]: r for r in load_results(tmp_path, "learning_rate")["runs"]}
    assert runs["lr_0.001"]["status"] == "completed"


# ---------------------------------------------------------------------------
# Interruption in-process (Ctrl-C): the resume checkpoint is used, or dropped with --fresh

@pytest.mark.parametrize("fresh", [False, True])
def test_interrupted_sweep_resumes_or_restarts_fresh(lr_runs, tmp_path, fresh):
    argv, reference, cut, resume = (lr_runs[k] for k in ("argv", "reference", "cut", "resume"))
    out_dir = tmp_path / "cut"
    shutil.copytree(cut, out_dir)  # the cut run's files as it left them, this test's own
    resume = out_dir / resume.relative_to(cut)
    state = checkpoints.load(str(resume))
    assert state["epoch"] == 1 and len(state["history"]["loss"]) == 1
    assert not (out_dir / "results" / "learning_rate.json").exists()  # an interrupt is not a failure

    code, out, err = run_script("main_learning_rate", argv(out_dir) + (["--fresh"] if fresh else []))
    assert code == 0, err
    if fresh:
        assert "resuming" not in out and "lr_0.0001 epoch 1/2" in out
    else:
        assert "lr_0.0001: resuming from epoch 2 of 2" in out and "lr_0.0001 epoch 1/2" not in out
    again = load_results(out_dir, "learning_rate")["runs"][0]
    assert again["history"] == reference["history"] and again["test_acc"] == reference["test_acc"]
    assert not resume.exists()


def test_readme_checkpoint_snippet_loads_the_model(activation_sweep):
    """The README's loading code (docs/outputs.md): the checkpoint's config and num_classes rebuild
    the network."""
    from alexnet import AlexNet
    out_dir, (code, _, _) = activation_sweep
    assert code == 0
    ckpt = torch.load(out_dir / "models" / "activation" / "elu.pt", weights_only=True, map_location="cpu")
    c = ckpt["config"]
    model = AlexNet(ckpt["num_classes"], c["activation"], c["dropout"], image_size=c["image_size"])
    model.load_state_dict(ckpt["model"])
    assert ckpt["num_classes"] == 10 and len(ckpt["classes"]) == 10
    assert model(torch.zeros(1, 3, 67, 67)).shape == (1, 10)
