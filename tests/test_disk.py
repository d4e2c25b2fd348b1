"""Checkpoints a user can afford (issue 21): no second copy of the same weights, --save
choosing what a run keeps, and the disk checked before any data loads."""
import json
import os
import subprocess

import pytest
import torch

from core import checkpoints
from core import disk
from core import flags
import alexnet
import evaluate
import sweep
import train
from conftest import load_results, one_batch, run_script, tiny_argv
from test_disk_and_plan import needs_of
from test_nothing_lost import one_line, tmpfs


def du_bytes(folder) -> int:
    """Bytes on disk as du counts them: a file with two names (a hard link) once."""
    return int(subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True, check=True).stdout.split()[0])


def best_at_epoch_1_of_2(monkeypatch):
    """Validation accuracy 0.9 at epoch 1 and 0.4 at epoch 2: the best epoch comes before the last."""
    real_split, splits, calls = train.Split, [], []
    real_evaluate = train.evaluate
    monkeypatch.setattr(train, "Split", lambda *a, **k: splits.append(real_split(*a, **k)) or splits[-1])

    def evaluate_(model, loader, precision):
        if loader is splits[0].val:
            calls.append(1)
            return [0.9] if len(calls) % 2 == 1 else [0.4]
        return real_evaluate(model, loader, precision)

    monkeypatch.setattr(train, "evaluate", evaluate_)


def test_a_run_whose_best_epoch_is_the_last_leaves_one_copy_of_its_weights(mnist_dir, tmp_path):
    code, _, err = run_script("main_learning_rate", one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path)]))
    assert code == 0, err
    (run,) = load_results(tmp_path, "learning_rate")["runs"]
    assert run["best_epoch"] == run["epochs_completed"] == 1
    models = tmp_path / "models" / "learning_rate"
    last, best = models / "lr_0.0001.pt", models / "lr_0.0001.best.pt"
    assert last.stat().st_ino == best.stat().st_ino
    assert du_bytes(models) < 1.05 * last.stat().st_size  # one copy, not two
    assert run["checkpoints"] == {"last": "lr_0.0001.pt", "best": "lr_0.0001.best.pt", "best_is_last": True}
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["test_acc"] == run["test_acc_at_best"] == run["test_acc"]
    assert evaluate.main([str(best), "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize("save, kept", [("both", {"last", "best"}), ("last", {"last"}), ("best", {"best"}),
                                        ("none", set())])
def test_each_save_choice_keeps_what_it_says(mnist_dir, tmp_path, monkeypatch, capsys, save, kept):
    best_at_epoch_1_of_2(monkeypatch)
    # 4 test images: no accuracy is looked at here, and evaluate.py draws a panel for each
    # test image predicted wrong (up to 16), the largest part of what each evaluation below costs
    argv = tiny_argv(mnist_dir, tmp_path, epochs=2, extra=["--test-size", "4"])
    code, _, err = run_script("main_learning_rate", one_batch(["--values", "1e-4", "--save", save, *argv]))
    assert code == 0, err
    (run,) = load_results(tmp_path, "learning_rate")["runs"]
    assert run["best_epoch"] == 1 and run["config"]["save"] == save
    models = tmp_path / "models" / "learning_rate"
    names = {"last": "lr_0.0001.pt", "best": "lr_0.0001.best.pt"}
    assert sorted(os.listdir(models)) == sorted(names[k] for k in kept)
    assert run["checkpoints"] == {"last": names["last"] if "last" in kept else None,
                                  "best": names["best"] if "best" in kept else None, "best_is_last": False}
    if kept == {"last", "best"}:  # different epochs: two files
        assert (models / names["last"]).stat().st_ino != (models / names["best"]).stat().st_ino
    monkeypatch.undo()
    capsys.readouterr()
    for which, name in names.items():
        code = evaluate.main([str(models / name), "--out", str(tmp_path)])
        err = capsys.readouterr().err
        if which in kept:
            assert code == 0
        else:
            assert code == 1 and "does not exist" in one_line(err)
            other = {"last": "best", "best": "last"}[which]
            assert (f"evaluate {models / names[other]}" in err) == (other in kept)


def test_the_estimate_is_within_10_percent_of_what_a_sweep_writes(mnist_dir, tmp_path, capsys):
    argv = one_batch(["--values", "1e-4", "1e-3", "--save", "last", *tiny_argv(mnist_dir, tmp_path)])
    args = flags.build_parser("learning_rate", "", [], {}, "", sweep.OPTIONS)
    flags.add_parallel_flags(args)
    args = args.parse_args(argv)
    base = flags.resolve_config(args, {}, train.DEFAULTS)
    plan = [("lr_0.0001", {"lr": 1e-4}), ("lr_0.001", {"lr": 1e-3})]
    needs = needs_of(plan, base, args.fuse)
    code, out, err = run_script("main_learning_rate", argv)
    assert code == 0, err
    assert "disk: this sweep writes up to" in out
    written = du_bytes(tmp_path / "models" / "learning_rate")
    estimated = needs["pending"] * needs["files"] * needs["file"]
    assert abs(estimated - written) <= 0.1 * written
    # a resume file of an Adam run (weights and two state tensors), against its estimate
    ds_config = {**base, "lr": 1e-4}
    group = train.Group([ds_config], 10, torch.device("cpu"))
    step = group.make_step("fp32")
    step(torch.randn(4, 3, 67, 67), torch.randint(0, 10, (1, 4)), 0.25)
    path = tmp_path / "r.resume.pt"
    history = {"loss": [1.0], "train_acc": [0.1], "val_acc": [0.1]}
    checkpoints.save({**checkpoints.resume_state(group.member_state(0), 1, history, ds_config), "best": None}, str(path))
    estimate = disk.resume_bytes(alexnet.parameter_count(ds_config["image_size"], 10), ds_config["optimizer"])
    assert abs(estimate - path.stat().st_size) <= 0.1 * path.stat().st_size
    assert disk.optimizer_state_tensors("adam") == 2 and disk.optimizer_state_tensors("sgd") == 0


def test_a_sweep_too_large_for_the_disk_stops_before_training_and_goes_on_with_the_flag(mnist_dir, tmp_path):
    with tmpfs(tmp_path / "small") as out:
        argv = ["--values", "1e-4", *tiny_argv(mnist_dir, out)]
        code, stdout, err = run_script("main_learning_rate", argv)
        assert code == 1
        line = one_line(err)
        assert "free" in line and "--no-disk-check" in line and "--save" in line
        assert "settings x" not in stdout and "epoch 1/1" not in stdout  # stopped before any data loaded
        assert not (out / "models" / "learning_rate").exists() or not os.listdir(out / "models" / "learning_rate")
        code, stdout, err = run_script("main_learning_rate", [*argv, "--no-disk-check"])
        assert "settings x" in stdout  # it went on, and the real full disk then stopped it
        assert code == 1 and "No space left on device" in one_line(err)


def test_disk_needs_count_the_save_choice_and_k():
    base = {**train.DEFAULTS, "dataset": "cifar10"}
    params = alexnet.parameter_count(base["image_size"], 10)
    file = disk.final_bytes(params)
    assert 233e6 < file < 234e6  # 58,322,314 fp32 parameters: the study's checkpoint

    plan = [(f"s{i}", {}) for i in range(5)]
    needs = needs_of(plan, base)
    assert needs["high"] == 5 * 2 * file + 4 * disk.resume_bytes(params, "adam", with_best=True)
    assert needs["low"] == 5 * file + disk.resume_bytes(params, "adam", with_best=True)
    needs = needs_of(plan, {**base, "save": "none"})
    assert needs["high"] == 4 * disk.resume_bytes(params, "adam", with_best=True)
    assert json.dumps(needs)  # plain numbers, printable
