"""--tune-lr: every setting at each rate of a grid, compared each at its own best rate
(chosen on validation accuracy only), beside the ranking at the study's fixed rates."""
import json
import shutil

import pytest
import torch

import report
import train
from conftest import as_group, load_results, run_script, skip_fsync, tiny_argv
from test_report import section, write_study

# (best val acc, test acc) per (activation, lr): relu wins at the fixed rate 1e-4, tanh after tuning;
# the test accuracies rank the rates the other way round, so a choice made on test would differ
TABLE = {("relu", 3e-5): (0.55, 0.90), ("relu", 1e-4): (0.60, 0.40), ("relu", 3e-4): (0.58, 0.95),
         ("tanh", 3e-5): (0.40, 0.99), ("tanh", 1e-4): (0.50, 0.98), ("tanh", 3e-4): (0.80, 0.30)}


def stand_in(table=TABLE, stop_at=None):
    """train.train_group replaced: known numbers per (activation, lr), seed s adds s / 100;
    Ctrl-C when the run stop_at = (activation, lr) starts."""
    calls = []

    def train_run(config, split, num_classes, resume_path=None, desc="run"):
        key = (config["activation"], config["lr"])
        if key == stop_at:
            raise KeyboardInterrupt
        calls.append(key)
        val, test = table[key]
        val, test = val + config["seed"] / 100, test + config["seed"] / 100
        return {"status": "completed", "history": {"loss": [1.0], "train_acc": [val], "val_acc": [val]},
                "test_acc": test, "best_val_acc": val, "epochs_completed": 1, "train_seconds": 0.01,
                "best_epoch": 1, "test_acc_at_best": test, "model": {"w": torch.zeros(1)}}

    group = as_group(train_run)
    group.calls = calls
    return group


def tuned(mnist_dir, out, monkeypatch, group=None, extra=()):
    group = group or stand_in()
    monkeypatch.setattr(train, "train_group", group)
    code, stdout, err = run_script("main_activation", ["--values", "relu", "tanh", "--tune-lr", "x0.3", "x1", "x3",
                                                       "--seeds", "2", *extra, *tiny_argv(mnist_dir, out)])
    return code, stdout, err, group.calls


@pytest.fixture(scope="module")
def tuned_sweep(mnist_dir, tmp_path_factory):
    """tuned() once, with the stand-in's numbers, for the tests that read its --out or copy it: a dict
    of out, code, stdout, err and calls (the runs the stand-in trained)."""
    out = tmp_path_factory.mktemp("tuned") / "tuned"
    with pytest.MonkeyPatch.context() as m:
        skip_fsync(m)
        code, stdout, err, calls = tuned(mnist_dir, out, m)
    return dict(out=out, code=code, stdout=stdout, err=err, calls=calls)


def test_each_setting_at_its_rate_chosen_on_validation(tuned_sweep):
    out, code, stdout, err, calls = (tuned_sweep[k] for k in ("out", "code", "stdout", "err", "calls"))
    assert code == 0, err
    assert sorted(set(calls)) == sorted(TABLE) and len(calls) == 12  # 2 settings x 3 rates x 2 seeds
    results = load_results(out, "activation")
    choice = {s: t["chosen_lr"] for s, t in results["tuning"].items()}
    assert choice == {"relu": 1e-4, "tanh": 3e-4}  # by validation; test would pick 3e-4 and 3e-5
    assert results["tuning"]["relu"]["at_edge"] is False and results["tuning"]["tanh"]["at_edge"] is True
    # every run says which rate it had and whether it is its setting's chosen one
    by_name = {(r["name"], r["seed"]): r for r in results["runs"]}
    assert by_name[("relu", 0)]["config"]["lr"] == 1e-4 and by_name[("relu", 0)]["at_chosen_lr"] is True
    assert by_name[("relu_at_lr0.0003", 1)]["config"]["lr"] == 3e-4
    assert by_name[("relu_at_lr0.0003", 1)]["at_chosen_lr"] is False
    assert by_name[("tanh_at_lr0.0003", 0)]["tune"] == {"setting": "tanh", "own_lr": 1e-4,
                                                         "params": {"activation": "tanh"}, "grid": ["x0.3", "x1", "x3"]}
    # the comparison uses each setting at its chosen rate
    rows = {r["setting"]: r for r in results["summary"]}
    assert set(rows) == {"relu", "tanh"}
    assert rows["tanh"]["test_acc_mean"] == pytest.approx(0.305) and rows["tanh"]["lr"] == 3e-4
    assert rows["relu"]["test_acc_mean"] == pytest.approx(0.405) and rows["relu"]["n"] == 2
    assert rows["relu"]["vs_best"]["n"] == 2  # paired over the two shared seeds
    assert results["best"]["setting"] == "tanh"
    assert "tanh: 3e-05 40.50%, 0.0001 50.50%, 0.0003* 80.50%  (at the edge of the grid: widen the grid)" in stdout


def test_a_ranking_that_tuning_changes_is_shown_both_ways(tuned_sweep, tmp_path):
    out = tmp_path / "flip"
    shutil.copytree(tuned_sweep["out"], out)  # this test's own copy: the report is written into it
    code, stdout, err = (tuned_sweep[k] for k in ("code", "stdout", "err"))
    assert code == 0, err
    results = load_results(out, "activation")
    assert results["fixed"]["best"]["setting"] == "relu" and results["best"]["setting"] == "tanh"
    assert "best by mean validation accuracy: tanh (each setting at its own best rate; at the fixed rates: relu)" \
        in stdout
    assert report.main(["--out", str(out)]) == 0
    act = section((out / "results" / "REPORT.md").read_text(), "Activation")
    assert ("Ranking at the fixed rates: relu, tanh. Ranking after tuning: tanh, relu. The winner changed: relu at "
            "the fixed rates, tanh after tuning.") in act
    assert "| tanh | 3e-05: 40.50, 0.0001: 50.50, 0.0003: 80.50 | 0.0003 (edge of the grid: widen it) | " \
           "50.50 / 98.50 | 80.50 / 30.50 |" in act
    assert "![activation isolation](../images/activation_isolation.png)" in act
    assert (out / "images" / "activation_isolation.png").stat().st_size > 0


def test_a_tuned_sweep_killed_midway_resumes_to_the_same_choices(mnist_dir, tuned_sweep, tmp_path, monkeypatch):
    whole = tuned_sweep["out"]
    assert tuned_sweep["code"] == 0
    cut = tmp_path / "cut"
    code, _, _, calls = tuned(mnist_dir, cut, monkeypatch, stand_in(stop_at=("tanh", 1e-4)), ["--fuse", "1"])
    assert code != 0 and 0 < len(calls) < 12
    assert load_results(cut, "activation")["progress"]["pending"]
    code, _, err, again = tuned(mnist_dir, cut, monkeypatch)
    assert code == 0, err
    assert len(calls) + len(again) == 12  # nothing trained twice
    a, b = load_results(whole, "activation"), load_results(cut, "activation")
    assert a["tuning"] == b["tuning"] and a["summary"] == b["summary"] and a["best"] == b["best"]
    assert b["progress"]["pending"] == []


@pytest.mark.parametrize("grid, message", [
    ([], "expected at least one argument"),
    (["0"], "rate '0' must be a positive number"),
    (["x-1"], "multiple '-1' must be a positive number"),
    (["1e-4", "1e-4"], "the same rate twice"),
    (["x1", "x1.0"], "the same rate twice"),
    (["x1", "1e-4"], "mixes rates and multiples"),
    (["fast"], "rate 'fast' is not a number"),
])
def test_a_bad_grid_is_refused_in_one_sentence(mnist_dir, tmp_path, grid, message):
    code, _, err = run_script("main_dropout", ["--tune-lr", *grid, *tiny_argv(mnist_dir, tmp_path / "bad")])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_the_learning_rate_sweep_has_no_tune_lr(mnist_dir, tmp_path):
    code, _, err = run_script("main_learning_rate", ["--tune-lr", "x1", *tiny_argv(mnist_dir, tmp_path / "lr")])
    assert code == 2 and "--tune-lr" in err


def test_a_plain_sweep_run_is_reused_at_its_own_rate(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "reuse"
    group = stand_in()
    monkeypatch.setattr(train, "train_group", group)
    assert run_script("main_activation", ["--values", "relu", *tiny_argv(mnist_dir, out)])[0] == 0
    assert group.calls == [("relu", 1e-4)]
    code, _, err, calls = tuned(mnist_dir, out, monkeypatch, extra=["--seeds", "1"])
    assert code == 0, err
    assert sorted(calls) == sorted(k for k in TABLE if k != ("relu", 1e-4))
    assert load_results(out, "activation")["tuning"]["relu"]["chosen_lr"] == 1e-4
    import csv
    with open(out / "results" / "activation.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert rows["relu"]["lr"] == "0.0001" and rows["relu_at_lr0.0003"]["lr"] == "0.0003"  # the reused run's too


def test_the_optimizer_sweep_tunes_by_multiples_of_each_own_rate(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "opt"
    seen = []

    def train_run(config, split, num_classes, resume_path=None, desc="run"):
        seen.append((config["optimizer"], config["lr"]))
        return {"status": "completed", "history": {"loss": [1.0], "train_acc": [0.5], "val_acc": [0.5]},
                "test_acc": 0.5, "best_val_acc": 0.5, "epochs_completed": 1, "model": {"w": torch.zeros(1)}}

    monkeypatch.setattr(train, "train_group", as_group(train_run))
    code, _, err = run_script("main_optimizer", ["--tune-lr", "x0.1", "x1", *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert sorted(seen) == sorted([("sgd", 0.01), ("sgd", 0.1), ("adagrad", 0.001), ("adagrad", 0.01),
                                   ("adam", 1e-5), ("adam", 1e-4)])


def test_fused_runs_of_one_setting_at_different_rates_equal_the_runs_alone(mnist_dir, tmp_path):
    argv = ["--values", "relu", "--tune-lr", "x0.3", "x1", "x3", "--kernels", "split"]
    runs = {}
    # one epoch: its second step already runs at each member's own rate (the first batch's loss is the
    # same for all three, the second one's differs). The runs alone are a reference for their numbers
    # only: their weights are not kept (--save none changes no number)
    unsaved = {"1": ["--save", "none"], "3": []}
    for k in ("1", "3"):
        out = tmp_path / f"fuse{k}"
        code, stdout, err = run_script("main_activation", [*argv, "--fuse", k, *tiny_argv(mnist_dir, out), *unsaved[k]])
        assert code == 0, err
        runs[k] = {r["name"]: r for r in load_results(out, "activation")["runs"]}
    assert set(runs["1"]) == {"relu_at_lr3e-05", "relu", "relu_at_lr0.0003"}
    assert all(len(r["fused_with"]) == 2 for r in runs["3"].values())
    for name, alone in runs["1"].items():
        fused = runs["3"][name]
        assert fused["config"]["lr"] == alone["config"]["lr"]
        assert fused["history"] == alone["history"], name  # the same arithmetic, bit for bit
        assert fused["test_acc"] == alone["test_acc"]
    losses = {r["history"]["loss"][-1] for r in runs["1"].values()}
    assert len(losses) == 3  # the rates really differ


def test_from_results_takes_a_tuned_winner_with_its_chosen_rate(mnist_dir, tuned_sweep, tmp_path, monkeypatch):
    from test_report import consolidated_with_fake_training
    out = tmp_path / "cons"
    shutil.copytree(tuned_sweep["out"], out)  # the tuned activation sweep, as it left its --out
    assert tuned_sweep["code"] == 0
    write_study(out, skip=("activation",))
    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch)
    assert params["activation"] == "tanh" and params["lr"] == 3e-4
    assert any(line.startswith("--from-results: activation best is tanh at its chosen lr 0.0003 ") for line in lines)
    assert "--from-results: lr=0.0003, the rate the tuned sweeps (activation) chose for their winners" in lines


def test_from_results_keeps_its_lr_when_tuned_sweeps_disagree(mnist_dir, tuned_sweep, tmp_path, monkeypatch):
    from test_report import consolidated_with_fake_training
    out = tmp_path / "disagree"
    shutil.copytree(tuned_sweep["out"], out)  # the tuned activation sweep, as it left its --out
    assert tuned_sweep["code"] == 0
    write_study(out, skip=("activation", "learning_rate"))
    dropout = json.loads((out / "results" / "dropout.json").read_text())
    for run in dropout["runs"]:  # the dropout sweep was tuned too, and chose 3e-5 for its winner p0.3
        run["tune"] = {"setting": run["name"], "own_lr": 3e-5, "params": run["params"], "grid": ["3e-05"]}
        run["config"] = {"optimizer": "adam", "lr": 3e-5}
    (out / "results" / "dropout.json").write_text(json.dumps(dropout))
    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch)
    assert params["activation"] == "tanh" and params["dropout"] == 0.3
    assert params["lr"] == 1e-4  # the study's, as neither the optimizer nor a learning-rate sweep chose another
    note = next(line for line in lines if "chose different rates" in line)
    assert "activation 0.0003, dropout 3e-05" in note and "keeping lr=0.0001" in note


def test_shards_of_a_tuned_sweep_end_as_the_whole(mnist_dir, tuned_sweep, tmp_path, monkeypatch):
    whole = tuned_sweep["out"]
    assert tuned_sweep["code"] == 0
    parts = tmp_path / "parts"
    trained = []
    for i in (1, 2, 3):
        code, _, err, calls = tuned(mnist_dir, parts, monkeypatch, extra=["--shard", f"{i}/3"])
        assert code == 0, err
        trained += calls
        # every shard plans the whole sweep: until the last, the others' runs are pending
        assert len(load_results(parts, "activation")["progress"]["pending"]) == 12 - len(trained)
    assert len(trained) == 12
    a, b = load_results(whole, "activation"), load_results(parts, "activation")
    assert a["tuning"] == b["tuning"] and a["summary"] == b["summary"] and b["progress"]["pending"] == []


def test_evaluate_takes_each_tuned_model_at_its_chosen_rate(mnist_dir, tmp_path, monkeypatch):
    import main_consolidated
    out = tmp_path / "evalcons"
    table = {("relu", 1e-4): (0.5, 0.5), ("relu", 3e-4): (0.6, 0.5),
             ("leakyrelu", 1e-4): (0.7, 0.5), ("leakyrelu", 3e-4): (0.6, 0.5)}
    monkeypatch.setattr(train, "train_group", stand_in(table))
    code, _, err = run_script("main_consolidated", ["--tune-lr", "1e-4", "3e-4", *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert main_consolidated.chosen_runs(str(out), ["baseline", "consolidated"]) == \
        ["baseline_at_lr0.0003", "consolidated"]


def test_a_tie_between_rates_goes_to_the_smaller_rate():
    """(0.6 + 0.7) / 2 and (0.65 + 0.65) / 2 differ in the last bit: still a tie."""
    from core import stats

    def run(lr, val, seed):
        return {"name": f"relu_at_lr{lr:g}", "params": {"activation": "relu", "lr": lr}, "seed": seed,
                "status": "completed", "config": {"lr": lr}, "best_val_acc": val, "test_acc": 0.5,
                "tune": {"setting": "relu", "own_lr": 1e-4, "params": {"activation": "relu"}, "grid": []}}

    runs = [run(3e-4, 0.6, 0), run(3e-4, 0.7, 1), run(1e-4, 0.65, 0), run(1e-4, 0.65, 1), run(1e-3, 0.2, 0),
            run(3e-5, 0.1, 0)]
    table = stats.tuning({"runs": runs})
    assert table["relu"]["chosen_lr"] == 1e-4 and table["relu"]["at_edge"] is False
    assert [r["lr"] for r in table["relu"]["rates"]] == [3e-5, 1e-4, 3e-4, 1e-3]


def test_records_hold_the_resolved_device_and_precision(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "auto"
    argv = tiny_argv(mnist_dir, out)
    for flag in ("--precision", "--device"):  # both left at auto
        i = argv.index(flag)
        del argv[i:i + 2]
    monkeypatch.setattr(train, "train_group", stand_in())
    code, _, err = run_script("main_activation", ["--values", "relu", "--tune-lr", "x1", "x3", *argv])
    assert code == 0, err
    for run in load_results(out, "activation")["runs"]:
        assert run["config"]["device"] == "cpu" and run["config"]["precision"] in ("bf16", "fp32")


def test_each_view_of_a_tuned_sweep_takes_each_setting_s_runs_at_its_rate():
    """stats.at_rates: "chosen" takes each setting's runs at its chosen rate, and a setting with
    no completed run at all (nothing to choose from) whole, so that it shows as failed rather
    than vanishing; "own" takes each setting's runs at its own fixed rate, and leaves out a
    setting whose own rate was not in its grid (it has no run there to show)."""
    from core import stats

    def run(setting, lr, val, seed, status="completed"):
        return {"name": f"{setting}_at_lr{lr:g}", "params": {"activation": setting, "lr": lr}, "seed": seed,
                "status": status, "config": {"lr": lr}, "best_val_acc": val if status == "completed" else None,
                "test_acc": 0.5 if status == "completed" else None,
                "tune": {"setting": setting, "own_lr": 1e-4, "params": {"activation": setting}, "grid": []}}

    runs = [run("relu", 1e-4, 0.6, 0), run("relu", 3e-4, 0.7, 0),  # relu: its own rate in the grid
            run("elu", 3e-5, 0.5, 0), run("elu", 3e-4, 0.8, 0),  # elu: own rate 1e-4 not in its grid
            run("sigmoid", 3e-5, None, 0, "failed"), run("sigmoid", 3e-4, None, 0, "failed")]  # nothing completed
    taken = {which: sorted((r["name"], r["run_name"]) for r in stats.at_rates({"runs": runs}, which)["runs"])
             for which in ("chosen", "own")}
    assert taken["chosen"] == [("elu", "elu_at_lr0.0003"), ("relu", "relu_at_lr0.0003"),
                               ("sigmoid", "sigmoid_at_lr0.0003"), ("sigmoid", "sigmoid_at_lr3e-05")]
    assert taken["own"] == [("relu", "relu_at_lr0.0001")]
