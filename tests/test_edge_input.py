"""Edge cases found by probing bad input: each ends with one clear sentence before any data
loads (exit code 2 for command-line errors), or does the right thing."""
import json
import math
import os
import re

import pytest
import torch

import data
import evaluate
from core import logs
import plotting
import report
from core import results
import sweep
import train
from core import flags
from conftest import run_script, tiny_argv, write_image_folder
from test_nothing_lost import tmpfs

CUT = "abcdef " * 60  # 420 characters of 6-letter words: any fixed cut of 120, 160 or 200 lands mid-word


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def refused(argv, tmp_path):
    """main_learning_rate.py with argv, on a dataset folder that does not exist: the line it
    refused with (exit code 2)."""
    code, _, err = run_script("main_learning_rate", ["--values", "1e-4",
                                                     *tiny_argv(tmp_path / "no-data", tmp_path / "out"), *argv])
    assert code == 2, (code, err)
    line = one_line(err)
    assert "no-data" not in line  # refused before the data loads
    return line


def ends_at_a_word(text):
    """text holds CUT shortened: whole words, then '...'."""
    return re.search(r"(^|\s)abcdef\.\.\.", text) is not None


# 1. every folder a run writes is checked before the data loads

@pytest.mark.parametrize("parent", ["models", "results"])
def test_an_unwritable_experiment_folder_is_refused_before_the_data_loads(tmp_path, parent):
    out = tmp_path / "out"
    with tmpfs(out / parent / "learning_rate", size="1m", read_only=True):
        code, _, err = run_script("main_learning_rate",
                                  ["--values", "1e-4", *tiny_argv(tmp_path / "no-data", out)])
    assert code == 2
    line = one_line(err)
    assert "--out" in line and os.path.join(parent, "learning_rate") in line and "no-data" not in line


# 2. evaluate.py on another image folder with the same number of classes

def test_evaluating_on_a_folder_with_other_class_names_is_refused(tmp_path):
    from alexnet import AlexNet
    trained_on = write_image_folder(tmp_path / "pets", classes=("cat", "dog", "frog"), n_train=4, n_test=2)
    other = write_image_folder(tmp_path / "cars", classes=("bus", "car", "van"), n_train=4, n_test=2)
    config = {**train.DEFAULTS, "dataset": "imagefolder", "data_dir": str(trained_on), "image_size": 67,
              "regime": "full", "batch_size": 4}
    ckpt = {"config": config, "num_classes": 3, "classes": ["cat", "dog", "frog"]}
    model = AlexNet(3, config["activation"], config["dropout"], image_size=67).eval()
    evaluate.predictions(model, ckpt, None, torch.device("cpu"), "fp32")  # its own folder: fine
    with pytest.raises(evaluate.InputError) as exc:
        evaluate.predictions(model, ckpt, str(other), torch.device("cpu"), "fp32")
    message = str(exc.value)
    assert "cat, dog, frog" in message and "bus, car, van" in message and "\n" not in message


# 3. records that parse but cannot be true

def good_run(**changes):
    run = {"name": "lr_0.0001", "params": {"lr": 1e-4}, "seed": 0, "status": "completed", "config": {},
           "history": {"loss": [1.0, 0.5], "train_acc": [0.5, None], "val_acc": [0.5, 0.6]},
           "test_acc": 0.5, "best_val_acc": 0.6, "test_acc_at_best": 0.55}
    run.update(changes)
    return run


@pytest.mark.parametrize("run, fragment", [
    (good_run(history={"loss": [1.0, 0.5], "train_acc": [0.5], "val_acc": [0.5, 0.6]}), "length"),
    (good_run(history={"loss": [1.0, 0.5], "train_acc": [0.5, 1.5], "val_acc": [0.5, 0.6]}), "train_acc"),
    (good_run(history={"loss": [1.0, 0.5], "train_acc": [0.5, 0.5], "val_acc": [-0.1, 0.6]}), "val_acc"),
    (good_run(best_val_acc=60.0), "best_val_acc"),
    (good_run(test_acc=1.01), "test_acc"),
    (good_run(test_acc_at_best=2), "test_acc_at_best"),
    (good_run(history={"loss": [math.inf, 0.5], "train_acc": [0.5, 0.5], "val_acc": [0.5, 0.6]}), "loss"),
    (good_run(history={"loss": [1.0, -0.5], "train_acc": [0.5, 0.5], "val_acc": [0.5, 0.6]}), "loss"),
    (good_run(history={"loss": [1.0, 0.5], "train_acc": [0.5, math.nan], "val_acc": [0.5, 0.6]}), "train_acc"),
    (good_run(best_val_acc=math.nan), "best_val_acc"),
])
def test_records_that_cannot_be_true_are_refused_in_one_sentence(run, fragment):
    problem = results.run_problem(run)
    assert problem is not None and fragment in problem and "lr_0.0001" in problem and "\n" not in problem


def test_a_record_with_infinity_is_refused_when_read(tmp_path):
    folder = tmp_path / "results" / "learning_rate"
    folder.mkdir(parents=True)
    (folder / "lr_0.0001_seed0.json").write_text(json.dumps(good_run(test_acc=math.inf)))  # writes Infinity
    with pytest.raises(results.ResultsError, match="test_acc"):
        results.read_results(str(tmp_path), "learning_rate")
    # what this repository writes still passes: a failed run's empty history, nulls for non-finite values
    assert results.run_problem(good_run()) is None
    assert results.run_problem(good_run(status="failed", test_acc=None, best_val_acc=None, test_acc_at_best=None,
                                        history={"loss": [], "train_acc": [], "val_acc": []})) is None


# 4. long error messages are cut at a word, not mid-word

def test_shorten_cuts_at_a_sentence_end_or_a_word():
    assert logs.shorten("short enough", 200) == "short enough"
    cut = logs.shorten(CUT, 120)
    assert len(cut) <= 120 and ends_at_a_word(cut) and cut.startswith("abcdef abcdef")
    assert logs.shorten("The file is damaged. It was written by something else entirely", 40) == \
        "The file is damaged..."
    assert logs.shorten("x" * 50, 20) == "x" * 17 + "..."


def test_a_damaged_checkpoint_names_its_cause_in_whole_words(tmp_path, monkeypatch):
    from core import checkpoints
    path = tmp_path / "a.pt"
    path.write_bytes(b"junk")

    def load(*args, **kwargs):
        raise RuntimeError(CUT)

    monkeypatch.setattr(checkpoints.torch, "load", load)
    with pytest.raises(checkpoints.CheckpointError) as exc:
        checkpoints.load(str(path))
    assert ends_at_a_word(str(exc.value)), str(exc.value)


def test_a_resume_file_that_cannot_be_used_is_named_in_whole_words(tmp_path, monkeypatch, capsys):
    from core import checkpoints
    path = tmp_path / "a.resume.pt"
    path.write_bytes(b"junk")

    def load(*args, **kwargs):
        raise checkpoints.CheckpointError(CUT)

    monkeypatch.setattr(checkpoints, "load", load)
    train.Member(dict(train.DEFAULTS), "run", str(path)).load_resume()
    line = one_line(capsys.readouterr().err)
    assert ends_at_a_word(line) and "starting this run from epoch 1" in line


def test_a_checkpoint_that_builds_no_alexnet_is_named_in_whole_words(tmp_path, monkeypatch):
    import alexnet
    from core import checkpoints
    path = tmp_path / "a.pt"
    path.write_bytes(b"junk")
    monkeypatch.setattr(checkpoints, "load", lambda p: {**{k: None for k in evaluate.SCHEMA}, "config": {
        "activation": "relu", "dropout": 0.5, "image_size": 67}, "num_classes": 3})

    def refuse(*args, **kwargs):
        raise ValueError(CUT)

    monkeypatch.setattr(alexnet, "AlexNet", refuse)
    with pytest.raises(evaluate.InputError) as exc:
        evaluate.load_model(str(path))
    assert ends_at_a_word(str(exc.value)), str(exc.value)


def test_out_of_memory_is_reported_in_whole_words(mnist_dir, tmp_path, monkeypatch):
    def train_group(*args, **kwargs):
        raise RuntimeError("CUDA out of memory " + CUT)

    monkeypatch.setattr(train, "train_group", train_group)
    monkeypatch.setattr(sweep, "out_of_memory", lambda err: True)
    code, _, err = run_script("main_learning_rate", ["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path / "out")])
    assert code == 1
    line = next(line for line in err.splitlines() if "failed (out of memory" in line)
    assert ends_at_a_word(line), line


# 5. a shard with no runs

def test_a_shard_without_runs_says_so_and_writes_nothing(mnist_dir, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_script("main_learning_rate",
                                   ["--values", "1e-4", "--shard", "2/2", *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert "shard 2/2 of this sweep has no runs" in stdout and "use at most 1 shard" in stdout
    assert not (out / "results" / "learning_rate.json").exists()
    assert not (out / "images").exists() or list((out / "images").iterdir()) == []


# 6. and 7. numbers on the command line

@pytest.mark.parametrize("argv, fragment", [
    (["--values", "-1e-4"], "positive"),
    (["--values", "1e-4", "-2E-3"], "positive"),
    (["--epochs", "１０"], "'１０' is not a whole number"),
    (["--epochs", "1_0"], "'1_0' is not a whole number"),
    (["--seed", "１"], "'１' is not a whole number"),
    (["--values", "1_0e-4"], "'1_0e-4' is not a number"),
    (["--values", "１e-4"], "'１e-4' is not a number"),
    (["--checkpoint-seconds", "1_0"], "'1_0' is not a number of seconds"),
    (["--checkpoint-seconds", "１"], "'１' is not a number of seconds"),
    (["--shard", "１/２"], "'１/２' is not of the form I/N"),
])
def test_numbers_are_ascii_and_negative_values_reach_their_own_check(tmp_path, argv, fragment):
    assert fragment in refused(argv, tmp_path)


def test_number_parsers_accept_only_ascii_digits():
    with pytest.raises(ValueError, match="not a number"):
        sweep.parse_number("٣")
    assert flags.whole_number("10") == 10 and sweep.parse_number("1e-4") == 1e-4 and flags.seconds("1.5") == 1.5


# 8. devices that cannot train

def test_a_device_that_cannot_train_is_refused_before_the_data_loads(tmp_path):
    line = refused(["--device", "meta"], tmp_path)
    assert "argument --device: 'meta' is not a training device; use auto, cpu, cuda, cuda:N or mps" in line


def test_evaluate_refuses_a_device_that_cannot_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "load_model", lambda path: (torch.nn.Linear(2, 2), {"config": {}}))
    assert evaluate.main(["x.pt", "--device", "meta", "--out", str(tmp_path)]) == 1
    assert "'meta' is not a training device" in one_line(capsys.readouterr().err)


# 9. an empty --out

def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = refused(["--out", ""], tmp_path)
    assert "argument --out" in line
    for main, argv in ((plotting.main, ["--out", ""]), (report.main, ["--out", ""]),
                       (evaluate.main, ["x.pt", "--out", ""])):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "argument --out" in capsys.readouterr().err.strip().splitlines()[-1]
    assert os.listdir(tmp_path) == []


# 10. a link loop in an image folder

def test_a_link_loop_in_an_image_folder_is_refused(tmp_path):
    write_image_folder(tmp_path, n_train=2, n_test=1)
    os.symlink(tmp_path / "train" / "cat", tmp_path / "train" / "cat" / "again")
    with pytest.raises(data.DataError) as exc:
        data.load_dataset("imagefolder", str(tmp_path), 67)
    assert str(tmp_path / "train" / "cat" / "again") in str(exc.value)


# 11. plotting.py for an experiment that does not exist

def test_plotting_suggests_a_script_only_for_known_experiments(tmp_path, capsys):
    assert plotting.main(["--out", str(tmp_path), "nonsense"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "main_nonsense.py" not in line and "'nonsense'" in line and "none yet" in line
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "activation.json").write_text(json.dumps({"experiment": "activation", "runs": []}))
    assert plotting.main(["--out", str(tmp_path), "nonsense"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "main_nonsense.py" not in line and "experiments there: activation" in line
    assert plotting.main(["--out", str(tmp_path), "dropout"]) == 1
    assert "main_dropout.py" in one_line(capsys.readouterr().err)


# 12. seeds past the largest

def test_seeds_past_the_largest_seed_are_refused(tmp_path):
    line = refused(["--seed", "2147483647", "--seeds", "2"], tmp_path)
    assert "--seeds" in line and "at most --seeds 1" in line
    assert "--seeds 2" in refused(["--seed", "2147483646", "--seeds", "3"], tmp_path)
