"""Behaviours the docs promise about a sweep's outputs, each pinned by a test that fails on a
plausible one-line bug (issue 27): evaluations of seeded and best-epoch checkpoints in the
report, --save over an earlier training, grid edges of --tune-lr at both ends, tuned rates kept
to their optimizer, and a disk check that refuses only what cannot fit."""
import collections
import json
import shutil

import pytest

import evaluate
import plotting
import report
import sweep
import train
from core import disk
from conftest import as_group, fabricated, load_results, one_batch, run_script, tiny_argv
from test_outputs_agree import class_table_accuracies
from test_report import consolidated_with_fake_training, results_run, write_study
from test_tune_lr import stand_in


def skip_pictures(monkeypatch):
    """No plots and no evaluation pictures: none is the subject here, and drawing them is most
    of what a tiny sweep or evaluation costs (the report links them either way)."""
    monkeypatch.setattr(plotting, "plot_experiment", lambda results, images_dir: [])
    for name in ("plot_confusion", "plot_filters", "plot_mistakes"):
        monkeypatch.setattr(evaluate, name, lambda *args: args[-1])  # the path it would have written


def test_evaluations_of_seeded_runs_and_of_a_best_checkpoint_are_shown_in_the_report(mnist_dir, tmp_path,
                                                                                        monkeypatch):
    """Evaluations (evaluate.py) of a consolidated sweep trained with --seeds 3, and of a run's
    .best.pt, belong to the recorded runs: the report shows each, with the accuracy its record
    holds, and lists none of them as stale."""
    skip_pictures(monkeypatch)
    out = tmp_path / "seeds"
    # each seed trained alone (--fuse 1): the same kernels as evaluate.py's, so the same accuracies
    argv = one_batch(tiny_argv(mnist_dir, out, extra=["--values", "consolidated", "--seeds", "3", "--fuse", "1",
                                                      "--test-size", "4"]))
    code, _, err = run_script("main_consolidated", argv)
    assert code == 0, err
    code, _, err = run_script("main_consolidated", ["--evaluate", *argv])
    assert code == 0, err
    best = out / "models" / "consolidated" / "consolidated_seed1.best.pt"
    assert evaluate.main([str(best), "--out", str(out)]) == 0
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    recorded = {r["seed"]: r for r in load_results(out, "consolidated")["runs"]}
    assert sorted(recorded) == [0, 1, 2]
    # one column per evaluation file, each the accuracy of the weights it names (one epoch:
    # the best epoch is the last, so the .best.pt holds the last epoch's test accuracy)
    assert class_table_accuracies(text) == {
        **{f"consolidated_seed{s}": round(100 * recorded[s]["test_acc"], 2) for s in (0, 1, 2)},
        "consolidated_seed1.best": round(100 * recorded[1]["test_acc_at_best"], 2)}
    assert "Not shown" not in text


@pytest.mark.parametrize("save", ["last", "none"])
def test_save_over_an_earlier_training_leaves_no_stale_best_file(mnist_dir, tmp_path, monkeypatch, capsys, save):
    """Retraining with --save last or --save none over a folder holding an earlier training's
    .best.pt removes it: evaluate.py, and main_consolidated.py --evaluate (which takes the
    .best.pt where no last weights were kept), never take the old weights for the new run's."""
    skip_pictures(monkeypatch)
    out = tmp_path / "save"
    argv = one_batch(tiny_argv(mnist_dir, out, extra=["--values", "consolidated", "--test-size", "4"]))
    code, _, err = run_script("main_consolidated", argv)
    assert code == 0, err
    models = out / "models" / "consolidated"
    last, best = models / "consolidated.pt", models / "consolidated.best.pt"
    assert last.exists() and best.exists()  # --save both: the earlier training's files
    code, _, err = run_script("main_consolidated", ["--fresh", "--save", save, *argv])
    assert code == 0, err
    (run,) = load_results(out, "consolidated")["runs"]
    assert run["config"]["save"] == save and run["checkpoints"]["best"] is None
    assert not best.exists()
    assert last.exists() == (save == "last")
    capsys.readouterr()
    assert evaluate.main([str(best), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    code, _, err = run_script("main_consolidated", ["--evaluate", *argv])
    if save == "none":  # nothing of this training to evaluate, rather than the earlier one's best weights
        assert code == 1 and "it kept no weights (--save none)" in err  # issue 28: not "not trained yet"
    else:
        assert code == 0, err
        evaluation = json.loads((out / "results" / "consolidated_consolidated_eval.json").read_text())
        assert evaluation["run_id"] == run["run_id"] and evaluation["weights"] == "last"


def test_a_rate_chosen_at_either_end_of_the_grid_is_flagged_as_at_the_edge(mnist_dir, tmp_path, monkeypatch):
    """--tune-lr flags a chosen rate at the bottom of the grid as at the edge, as it does one at
    the top: in the results file, the sweep's table and the report; one inside is not flagged."""
    skip_pictures(monkeypatch)
    out = tmp_path / "edges"
    # (best val acc, test acc): relu best at the smallest rate, tanh at the largest, elu inside
    table = {("relu", 3e-5): (0.70, 0.5), ("relu", 1e-4): (0.60, 0.5), ("relu", 3e-4): (0.50, 0.5),
             ("tanh", 3e-5): (0.50, 0.5), ("tanh", 1e-4): (0.60, 0.5), ("tanh", 3e-4): (0.70, 0.5),
             ("elu", 3e-5): (0.50, 0.5), ("elu", 1e-4): (0.70, 0.5), ("elu", 3e-4): (0.60, 0.5)}
    monkeypatch.setattr(train, "train_group", stand_in(table))
    code, stdout, err = run_script("main_activation", ["--values", "relu", "tanh", "elu", "--tune-lr", "x0.3", "x1",
                                                       "x3", *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    tuning = load_results(out, "activation")["tuning"]
    assert {s: (t["chosen_lr"], t["at_edge"]) for s, t in tuning.items()} == \
        {"relu": (3e-5, True), "tanh": (3e-4, True), "elu": (1e-4, False)}
    printed = {s: next(line for line in stdout.splitlines() if line.startswith(f"  {s}: ")) for s in tuning}
    assert {s: line.endswith("(at the edge of the grid: widen the grid)") for s, line in printed.items()} == \
        {"relu": True, "tanh": True, "elu": False}
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    # the report's tuning table: | setting | each rate's accuracy | chosen lr | ...
    chosen = {s: next(line for line in text.splitlines() if line.startswith(f"| {s} | 3e-05: ")).split(" | ")[2]
              for s in tuning}
    assert chosen == {"relu": "3e-05 (edge of the grid: widen it)", "tanh": "0.0003 (edge of the grid: widen it)",
                      "elu": "0.0001"}


def tuned_results(out, experiment, optimizer, rows):
    """A finished --tune-lr sweep's results file, trained with optimizer: rows are (setting,
    params, own lr, {lr: mean best validation accuracy}), two seeds each."""
    runs = []
    for setting, params, own, rates in rows:
        for lr, val in rates.items():
            name = setting if lr == own else f"{setting}_at_lr{lr:g}"
            for seed in (0, 1):
                run = results_run(name, {**params, "lr": lr}, seed, val + 0.01 * seed, 0.5)
                run.update(config={"optimizer": optimizer, "lr": lr, **params},
                           tune={"setting": setting, "own_lr": own, "params": params, "grid": ["x1", "x3"]})
                runs.append(run)
    (out / "results" / f"{experiment}.json").write_text(json.dumps({"experiment": experiment, "runs": runs}))


def test_from_results_takes_no_tuned_rate_from_a_sweep_of_another_optimizer(mnist_dir, tmp_path, monkeypatch):
    """main_consolidated.py --from-results applies a tuned sweep's chosen rate only where that
    sweep trained with the consolidated model's optimizer (Adam here): an SGD sweep's rate is
    ignored, with a note, and an Adam sweep's is taken."""
    skip_pictures(monkeypatch)
    out = tmp_path / "optimizers"
    write_study(out, skip=("activation", "dropout", "learning_rate"))  # the optimizer sweep: Adam at 1e-4
    # the activation sweep, tuned with SGD, chose 0.3 for its winner elu; the dropout sweep, tuned
    # with Adam, chose 3e-4 for its winner p0.3. Were the SGD rate taken too, the two rates would
    # disagree and the consolidated model keep 1e-4; were it taken alone, Adam would train at 0.3.
    tuned_results(out, "activation", "sgd", [("relu", {"activation": "relu"}, 0.1, {0.1: 0.60, 0.3: 0.55}),
                                             ("elu", {"activation": "elu"}, 0.1, {0.1: 0.65, 0.3: 0.80})])
    tuned_results(out, "dropout", "adam", [("p0", {"dropout": 0.0}, 1e-4, {1e-4: 0.60, 3e-4: 0.55}),
                                           ("p0.3", {"dropout": 0.3}, 1e-4, {1e-4: 0.65, 3e-4: 0.80})])
    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch)
    assert params["optimizer"] == "adam" and params["activation"] == "elu" and params["dropout"] == 0.3
    assert params["lr"] == 3e-4
    assert "--from-results: activation's chosen lr is for sgd, not adam; ignored" in lines
    assert "--from-results: lr=0.0003, the rate the tuned sweeps (dropout) chose for their winners" in lines


def test_free_space_between_the_least_and_the_most_a_sweep_writes_warns_and_trains(mnist_dir, tmp_path,
                                                                                      monkeypatch):
    """Where the free space lies between the low and the high disk estimate, the sweep does not
    refuse: it warns that it may run out of space, then trains every run."""
    skip_pictures(monkeypatch)
    out = tmp_path / "between"
    estimates = []
    real_needs = sweep.disk_needs
    monkeypatch.setattr(sweep, "disk_needs", lambda *a: estimates.append(real_needs(*a)) or estimates[-1])
    usage = collections.namedtuple("usage", "total used free")

    def disk_usage(path):
        needs = estimates[-1]  # the estimate check_disk just asked for
        free = (needs["low"] + needs["high"]) // 2
        return usage(10 * needs["high"], 10 * needs["high"] - free, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    trained = fabricated({(1e-4, 0): (0.6, 0.5), (1e-3, 0): (0.7, 0.5)}, "lr")  # what is trained is not the subject
    monkeypatch.setattr(train, "train_group", as_group(trained))
    # 2 epochs: a resume file after epoch 1 and a best epoch before the last are possible (1 epoch: neither,
    # and the least and the most it writes are the same)
    code, stdout, err = run_script("main_learning_rate", ["--values", "1e-4", "1e-3",
                                                          *tiny_argv(mnist_dir, out, epochs=2)])
    (needs,) = estimates
    assert needs["low"] < (needs["low"] + needs["high"]) // 2 < needs["high"]  # the case under test
    assert code == 0, err
    assert len(trained.calls) == 2
    assert [r["status"] for r in load_results(out, "learning_rate")["runs"]] == ["completed", "completed"]
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "may run out of space" in warning and disk.size(needs["high"]) in warning
    assert "--no-disk-check" not in err  # not the refusal


def test_a_record_names_the_cpu_threads_it_trained_with(mnist_dir, tmp_path):
    """The worked study trained one config and seed on 1 and on 2 threads: bit for bit alike at
    equal counts, not across them; the record must say which it was."""
    import torch
    from conftest import load_results, run_script, tiny_argv
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        code, _, err = run_script("main_learning_rate", ["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path)])
    finally:
        torch.set_num_threads(before)
    assert code == 0, err
    (run,) = load_results(tmp_path, "learning_rate")["runs"]
    assert run["trained_on"]["threads"] == 1
