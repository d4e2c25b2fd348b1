"""The command line every main_*.py shares (sweep.py): bad input exits 2 with one line,
the default sweeps have the documented runs, and settings resolve in the documented order."""
import importlib

import pytest

import sweep
import train
from core import flags
from core.results import fmt
from conftest import EXPERIMENTS

SCRIPTS = {name: importlib.import_module(f"main_{name}") for name in EXPERIMENTS}


def assert_one_line_error(capsys, script, argv):
    with pytest.raises(SystemExit) as exc:
        SCRIPTS[script].main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "error" in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("script, argv, fragment", [
    ("learning_rate", ["--values=-1e-4"], "positive"),
    ("learning_rate", ["--values", "-0.001"], "positive"),
    ("learning_rate", ["--values", "-1e-4"], "--values"),
    ("learning_rate", ["--values", "0"], "positive"),
    ("learning_rate", ["--values", "abc"], "not a number"),
    ("learning_rate", ["--values", "nan"], "positive"),
    ("learning_rate", ["--values", "inf"], "positive"),
    ("learning_rate", ["--values", "1e-4", "0.0001"], "twice"),
    ("dropout", ["--values", "1.0"], "[0, 1)"),
    ("dropout", ["--values", "-0.1"], "--values"),
    ("dropout", ["--values", "0.2", "half"], "not a number"),
    ("activation", ["--values", "relu", "swish"], "swish"),
    ("optimizer", ["--values", "lbfgs"], "lbfgs"),
    ("optimizer", ["--values", "sgd:-1"], "positive"),
    ("optimizer", ["--values", "adam:x"], "not a number"),
    ("weight_regularization", ["--values", "1e-4"], "L1,L2"),
    ("weight_regularization", ["--values", "1e-4,0,0"], "L1,L2"),
    ("weight_regularization", ["--values", "a,b"], "not a number"),
    ("weight_regularization", ["--values", "0,-1e-4"], "positive"),
    ("consolidated", ["--values", "best"], "best"),
    ("learning_rate", ["--image-size", "50"], "67"),
    ("learning_rate", ["--image-size", "big"], "--image-size"),
    ("learning_rate", ["--batch-size", "0"], "--batch-size"),
    ("learning_rate", ["--batch-size", "-3"], "--batch-size"),
    ("learning_rate", ["--epochs", "0"], "--epochs"),
    ("learning_rate", ["--train-size", "1.5"], "--train-size"),
    ("learning_rate", ["--seeds", "0"], "--seeds"),
    ("learning_rate", ["--checkpoint-every", "0"], "--checkpoint-every"),
    ("learning_rate", ["--dataset", "imagenet"], "--dataset"),
    ("learning_rate", ["--regime", "half"], "--regime"),
    ("learning_rate", ["--precision", "fp8"], "--precision"),
    ("learning_rate", ["--train-acc", "sometimes"], "--train-acc"),
    ("learning_rate", ["--seed", "x"], "--seed"),
    ("learning_rate", ["--seed", "-1"], "--seed"),
    ("learning_rate", ["--no-such-flag"], "unrecognized"),
])
def test_bad_input_exits_2_with_one_line(capsys, script, argv, fragment):
    line = assert_one_line_error(capsys, script, argv)
    assert line.startswith(f"main_{script}.py: error:")
    assert fragment in line


def test_bad_flags_create_nothing(capsys, tmp_path):
    assert_one_line_error(capsys, "learning_rate", ["--values", "-0.5", "--out", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", EXPERIMENTS)
def test_help_lists_the_shared_flags(capsys, script):
    with pytest.raises(SystemExit) as exc:
        SCRIPTS[script].main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--values", "--dataset", "--data-dir", "--regime", "--epochs", "--batch-size", "--train-size",
                 "--val-size", "--test-size", "--image-size", "--seed", "--seeds", "--device", "--precision",
                 "--compile", "--train-acc", "--checkpoint-every", "--out", "--fresh", "--quick", "--fuse", "--kernels",
                 "--save", "--no-disk-check"):
        assert flag in out


# ---------------------------------------------------------------------------
# Default sweeps, without training them

DOCUMENTED = {
    # experiment: (number of runs, regime, epochs)
    "learning_rate": (5, "subset", 25),
    "optimizer": (3, "subset", 50),
    "weight_regularization": (8, "subset", 25),
    "activation": (5, "subset", 25),
    "dropout": (7, "full", 50),
    "consolidated": (2, "full", 50),
}


@pytest.fixture
def captured_sweep(monkeypatch):
    calls = []

    def fake_run_sweep(experiment, runs, base, args, device=None, jobs=None, tunes=None):
        calls.append(dict(experiment=experiment, runs=runs, base=base, args=args))
        return 0

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    return calls


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_default_values_give_the_documented_runs(captured_sweep, experiment):
    module = SCRIPTS[experiment]
    assert module.ABLATION.name == experiment
    assert module.main([]) == 0
    call = captured_sweep[0]
    n, regime, epochs = DOCUMENTED[experiment]
    assert call["experiment"] == experiment
    assert len(module.VALUES) == n and len(call["runs"]) == n
    names = [name for name, _ in call["runs"]]
    assert len(set(names)) == n
    assert call["base"]["regime"] == regime and call["base"]["epochs"] == epochs
    assert call["base"]["batch_size"] == 64 and call["base"]["image_size"] == 227


def test_learning_rate_values():
    runs = [SCRIPTS["learning_rate"].make_run(v) for v in SCRIPTS["learning_rate"].VALUES]
    assert [p["lr"] for _, p in runs] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    assert runs[2][0] == "lr_0.0001"


def test_optimizer_values_keep_each_optimizers_study_rate():
    runs = dict(SCRIPTS["optimizer"].make_run(v) for v in SCRIPTS["optimizer"].VALUES)
    assert list(runs.values()) == [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adagrad", "lr": 0.01},
                                   {"optimizer": "adam", "lr": 1e-4}]
    assert SCRIPTS["optimizer"].make_run("adagrad") == SCRIPTS["optimizer"].make_run("adagrad:0.01")
    assert SCRIPTS["optimizer"].make_run("sgd:0.5")[1] == {"optimizer": "sgd", "lr": 0.5}


def test_weight_regularization_values_include_the_unregularised_baseline():
    runs = [SCRIPTS["weight_regularization"].make_run(v) for v in SCRIPTS["weight_regularization"].VALUES]
    pairs = [(p["l1"], p["l2"]) for _, p in runs]
    assert pairs[0] == (0.0, 0.0)
    assert (5e-6, 9.5e-5) in pairs
    assert len(set(pairs)) == 8


def test_activation_values_are_the_studys_five():
    runs = [SCRIPTS["activation"].make_run(v) for v in SCRIPTS["activation"].VALUES]
    assert sorted(p["activation"] for _, p in runs) == ["elu", "leakyrelu", "relu", "sigmoid", "tanh"]
    assert SCRIPTS["activation"].make_run("gelu") == ("gelu", {"activation": "gelu"})


def test_dropout_values_include_no_dropout():
    runs = [SCRIPTS["dropout"].make_run(v) for v in SCRIPTS["dropout"].VALUES]
    ps = [p["dropout"] for _, p in runs]
    assert 0.0 in ps and 0.25 in ps
    assert all(0 <= p < 1 for p in ps)
    assert SCRIPTS["dropout"].make_run("0") == ("p0", {"dropout": 0.0})


def test_consolidated_models():
    models = dict(SCRIPTS["consolidated"].make_run(v) for v in SCRIPTS["consolidated"].VALUES)
    assert models["baseline"] == dict(optimizer="adam", lr=1e-4, l1=0.0, l2=0.0, activation="relu", dropout=0.0)
    assert models["consolidated"] == dict(optimizer="adam", lr=1e-4, l1=5e-6, l2=9.5e-5,
                                          activation="leakyrelu", dropout=0.25)


def test_explicit_values_replace_the_defaults(captured_sweep):
    assert SCRIPTS["dropout"].main(["--values", "0.1", "0.5"]) == 0
    assert captured_sweep[0]["runs"] == [("p0.1", {"dropout": 0.1}), ("p0.5", {"dropout": 0.5})]


# ---------------------------------------------------------------------------
# Resolving settings: explicit flags, then --quick, then the script's settings, then DEFAULTS

def test_flags_override_script_settings_and_defaults(captured_sweep):
    SCRIPTS["dropout"].main(["--epochs", "3", "--batch-size", "8", "--dataset", "mnist", "--data-dir", "d",
                             "--seed", "0", "--image-size", "99", "--regime", "subset", "--train-acc", "eval",
                             "--precision", "fp32", "--device", "cpu", "--checkpoint-every", "2", "--compile"])
    base = captured_sweep[0]["base"]
    assert base["epochs"] == 3 and base["batch_size"] == 8 and base["dataset"] == "mnist"
    assert base["data_dir"] == "d" and base["seed"] == 0 and base["image_size"] == 99
    assert base["regime"] == "subset" and base["train_acc"] == "eval" and base["precision"] == "fp32"
    assert base["device"] == "cpu" and base["checkpoint_every"] == 2 and base["compile"] is True
    assert set(base) == set(train.DEFAULTS)


def test_quick_preset_and_explicit_flags_win(captured_sweep):
    SCRIPTS["learning_rate"].main(["--quick"])
    base = captured_sweep[0]["base"]
    for key, value in flags.QUICK.items():
        assert base[key] == value
    assert base["image_size"] == 67
    SCRIPTS["learning_rate"].main(["--quick", "--epochs", "1", "--image-size", "80"])
    base = captured_sweep[1]["base"]
    assert base["epochs"] == 1 and base["image_size"] == 80 and base["train_size"] == flags.QUICK["train_size"]


def test_out_defaults_to_the_repository_root(captured_sweep):
    SCRIPTS["activation"].main([])
    assert captured_sweep[0]["args"].out == sweep.ROOT
    assert captured_sweep[0]["args"].seeds == 1 and captured_sweep[0]["args"].fresh is False


def test_fmt():
    assert fmt(1e-05) == "1e-05" and fmt(0.25) == "0.25" and fmt("adam") == "adam"
    assert fmt(1e-4) == "0.0001"
