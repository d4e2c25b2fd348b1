"""plotting.py: plots from results dicts and files, never retraining."""
import json
import os
import shutil

import numpy as np
import pytest

import plotting

PNG = b"\x89PNG\r\n\x1a\n"


def run(name, params, seed=0, status="completed", loss=(2.3, 2.0, 1.8), test_acc=0.3):
    n = len(loss)
    return {"name": name, "params": params, "seed": seed, "status": status,
            "history": {"loss": list(loss), "train_acc": [0.1 * (i + 1) for i in range(n)],
                        "val_acc": [0.1 * (i + 1) for i in range(n)]},
            "test_acc": test_acc, "best_val_acc": 0.1 * n if n else None, "epochs_completed": n}


def lr_results():
    return {"experiment": "learning_rate", "runs": [
        run("lr_0.0001", {"lr": 1e-4}, seed=0),
        run("lr_0.0001", {"lr": 1e-4}, seed=1, loss=(2.2, 1.9, 1.7), test_acc=0.35),
        run("lr_0.01", {"lr": 1e-2}, status="diverged", loss=(2.3,), test_acc=None),
        run("lr_1", {"lr": 1.0}, status="diverged", loss=(), test_acc=None),
        run("lr_0.1", {"lr": 0.1}, status="failed", loss=(), test_acc=None),
    ]}


FOUR = ("loss", "train_acc", "val_acc", "test_acc")


def assert_pngs(paths, images_dir, experiment):
    """The four documented figures are among those written; every one written is a PNG there."""
    expected = {os.path.join(images_dir, f"{experiment}_{k}.png") for k in FOUR}
    assert expected <= set(paths)
    for path in paths:
        assert os.path.dirname(path) == images_dir
        assert os.path.basename(path).startswith(experiment + "_")
        with open(path, "rb") as f:
            assert f.read(8) == PNG
        assert os.path.getsize(path) > 1000


def test_group_runs_keeps_finished_and_diverged_runs_in_order():
    groups = plotting.group_runs(lr_results())
    assert list(groups) == ["lr_0.0001", "lr_0.01", "lr_1"]
    assert [r["seed"] for r in groups["lr_0.0001"]] == [0, 1]


def test_mean_std_over_runs_of_different_lengths():
    mean, std = plotting._mean_std([[1.0, 2.0, 3.0], [3.0, None], [5.0]])
    assert np.allclose(mean, [3.0, 2.0, 3.0])
    assert np.allclose(std, [np.std([1, 3, 5]), 0.0, 0.0])


def test_numeric_axis():
    assert plotting._numeric_axis(plotting.group_runs(lr_results())) == "lr"
    two = {"a": [run("a", {"l1": 0.0, "l2": 1e-4})], "b": [run("b", {"l1": 1e-6, "l2": 0.0})]}
    assert plotting._numeric_axis(two) is None
    words = {"relu": [run("relu", {"activation": "relu"})], "elu": [run("elu", {"activation": "elu"})]}
    assert plotting._numeric_axis(words) is None


def test_plot_experiment_with_seeds_divergence_and_failures(tmp_path):
    images = str(tmp_path / "images")
    paths = plotting.plot_experiment(lr_results(), images)
    assert_pngs(paths, images, "learning_rate")
    # a sweep of one number also gets accuracy against that number (see plotting's docstring)
    assert os.path.join(images, "learning_rate_hparam.png") in paths


@pytest.mark.parametrize("results", [
    {"experiment": "optimizer", "runs": [run("sgd_lr0.1", {"optimizer": "sgd", "lr": 0.1}),
                                         run("adam_lr0.0001", {"optimizer": "adam", "lr": 1e-4})]},
    {"experiment": "dropout", "runs": [run("p0", {"dropout": 0.0}), run("p0.25", {"dropout": 0.25})]},
    {"experiment": "activation", "runs": [run("relu", {"activation": "relu"})]},
    {"experiment": "empty", "runs": []},
    {"experiment": "allfailed", "runs": [run("x", {"lr": 1e-3}, status="failed", loss=(), test_acc=None)]},
])
def test_plot_experiment_shapes(tmp_path, results):
    paths = plotting.plot_experiment(results, str(tmp_path))
    assert_pngs(paths, str(tmp_path), results["experiment"])


def test_main_redraws_from_results_files(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "learning_rate.json").write_text(json.dumps(lr_results()))
    other = {"experiment": "activation", "runs": [run("relu", {"activation": "relu"})]}
    (tmp_path / "results" / "activation.json").write_text(json.dumps(other))
    assert plotting.main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert all(os.path.exists(p) for p in printed)
    assert_pngs([p for p in printed if "learning_rate" in p], str(tmp_path / "images"), "learning_rate")
    assert_pngs([p for p in printed if "activation" in p], str(tmp_path / "images"), "activation")
    shutil.rmtree(tmp_path / "images")
    assert plotting.main(["--out", str(tmp_path), "activation"]) == 0
    drawn = os.listdir(tmp_path / "images")
    assert {f"activation_{k}.png" for k in FOUR} <= set(drawn)
    assert all(name.startswith("activation_") for name in drawn)  # only the experiment asked for


def test_main_redraws_a_real_sweep(lr_sweep, tmp_path):
    shutil.copytree(os.path.join(lr_sweep["out"], "results"), tmp_path / "results")
    assert plotting.main(["--out", str(tmp_path)]) == 0
    assert {f"learning_rate_{k}.png" for k in FOUR} <= set(os.listdir(tmp_path / "images"))


def test_main_without_results_exits_1(tmp_path, capsys):
    assert plotting.main(["--out", str(tmp_path)]) == 1
    assert "no results files" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    assert plotting.main(["--out", str(tmp_path), "dropout"]) == 1
    assert "main_dropout.py" in capsys.readouterr().err
