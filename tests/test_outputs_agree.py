"""Outputs that never contradict each other: --from-results only from finished sweeps (or
when told), the report describing models as trained, evaluations tied to the weights they
scored, unfinished sweeps and ties said as such, and the images each table rests on."""
import json
import re
import shutil

import pytest

import report
from core import results
import train
from conftest import as_group, fabricated, load_results, one_batch, run_script, tiny_argv
from test_report import consolidated_with_fake_training, section, write_study


def interrupted_activation(mnist_dir, out, monkeypatch):
    """An activation sweep of relu, leakyrelu, tanh where Ctrl-C lands while tanh trains:
    relu and leakyrelu are recorded, tanh is not."""
    stand_in = fabricated({("relu", 0): (0.60, 0.55), ("leakyrelu", 0): (0.70, 0.65)}, "activation")

    def train_run(config, split, num_classes, resume_path=None, desc="run"):
        if config["activation"] == "tanh":
            raise KeyboardInterrupt
        return stand_in(config, split, num_classes, resume_path, desc)

    monkeypatch.setattr(train, "train_group", as_group(train_run))
    code, _, _ = run_script("main_activation", ["--values", "relu", "leakyrelu", "tanh", "--fuse", "1",
                                                *tiny_argv(mnist_dir, out)])
    assert code != 0
    assert [r["name"] for r in load_results(out, "activation")["runs"]] == ["relu", "leakyrelu"]


def test_from_results_refuses_an_unfinished_sweep_and_takes_it_when_told(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "partial"
    write_study(out, skip=("activation",))
    interrupted_activation(mnist_dir, out, monkeypatch)
    progress = load_results(out, "activation")["progress"]
    assert progress == {"planned": 3, "finished": 2, "pending": ["tanh seed 0"], "failed": []}

    code, stdout, err = run_script("main_consolidated", ["--from-results", "--values", "consolidated",
                                                         *tiny_argv(mnist_dir, out)])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "activation has 2 of 3 runs finished (1 missing: tanh seed 0)" in err and "--allow-partial" in err
    assert not (out / "results" / "consolidated.json").exists()

    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch, ["--allow-partial"])
    assert params["activation"] == "leakyrelu"
    line = next(line for line in lines if "activation best" in line)
    assert line == ("--from-results: activation best is leakyrelu (of 2 setting(s); 1 seed(s), mean best validation "
                    "accuracy 70.00%; unfinished: 2 of 3 runs): activation=leakyrelu")


def test_from_results_takes_a_finished_sweep_after_its_rerun(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "rerun"
    write_study(out, skip=("activation",))
    interrupted_activation(mnist_dir, out, monkeypatch)
    monkeypatch.setattr(train, "train_group", as_group(fabricated({("tanh", 0): (0.9, 0.5)}, "activation")))
    code, _, err = run_script("main_activation", ["--values", "relu", "leakyrelu", "tanh",
                                                  *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert load_results(out, "activation")["progress"]["pending"] == []
    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch)
    assert params["activation"] == "tanh"
    assert "(of 3 setting(s); 1 seed(s), mean best validation accuracy 90.00%)" in \
        next(line for line in lines if "activation best" in line)


def test_report_says_not_finished_and_lists_what_is_pending(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "running"
    interrupted_activation(mnist_dir, out, monkeypatch)
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    act = section(text, "Activation")
    assert "**Not finished (2 of 3 runs); pending: tanh seed 0.**" in act
    # the images each run used, and the caps that made them so few
    assert "32 train / 16 val / 16 test images (capped: --train-size 32, --val-size 16, --test-size 16)" in act
    row = next(line for line in section(text, "The study's findings beside these runs").splitlines()
               if line.startswith("| activation |"))
    assert row == ("| activation | LeakyReLU is best | not finished (2 of 3 runs); pending: tanh seed 0; so far best: "
                   "leakyrelu | - |")


def test_report_describes_the_consolidated_model_as_trained(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "asrun"
    write_study(out)
    for ablation, best in (("activation", "relu"), ("learning_rate", "lr_0.0001")):
        data = json.loads((out / "results" / f"{ablation}.json").read_text())
        for run in data["runs"]:  # relu and lr 1e-4 win instead
            run["best_val_acc"] = 0.95 if run["name"] == best else 0.10
        (out / "results" / f"{ablation}.json").write_text(json.dumps(data))
    monkeypatch.setattr(train, "train_group", as_group(fabricated(
        {("relu", 0): (0.5, 0.3), ("leakyrelu", 0): (0.5, 0.3)}, "activation")))
    code, _, err = run_script("main_consolidated", ["--from-results", *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    cons = section(text, "Consolidated model")
    assert ("Models as trained: baseline: Adam lr 0.0001, relu, dropout 0, no weight penalty; consolidated: "
            "Adam lr 0.0001, relu, dropout 0.3, L1 0, L2 0.0001.") in cons
    row = next(line for line in section(text, "The study's findings beside these runs").splitlines()
               if line.startswith("| consolidated |"))
    assert "this run's consolidated model is not the study's (Adam lr 0.0001, relu, dropout 0.3, L1 0, " \
           "L2 0.0001)" in row


def test_report_words_a_tie_as_a_tie(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "tie"
    monkeypatch.setattr(train, "train_group", as_group(fabricated(
        {("relu", 0): (0.5, 0.09), ("leakyrelu", 0): (0.5, 0.09)}, "activation")))
    code, _, err = run_script("main_consolidated", tiny_argv(mnist_dir, out))
    assert code == 0, err
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    cons = section(text, "Consolidated model")
    assert "| baseline (best; tied on validation with consolidated) |" in cons
    assert "**Verdict.** consolidated and baseline tie on test accuracy at 9.00% (n = 1 and 1 seed(s))." in cons
    assert "leads" not in cons and "trails" not in cons
    row = next(line for line in section(text, "The study's findings beside these runs").splitlines()
               if line.startswith("| consolidated |"))
    assert row.endswith("| consolidated and baseline tie on test accuracy at 9.00% (n = 1 and 1 seed(s)). "
                        "| no (a tie) |")


def test_report_keeps_the_published_consolidated_model_in_step_with_the_script():
    import main_consolidated
    (published,) = [a for a in report.study() if a.name == "consolidated"]
    assert published.published_run() == ("consolidated", main_consolidated.MODELS["consolidated"])


def class_table_accuracies(text):
    """{model: the accuracy in the class-by-class table's 'all' row}, empty if no table."""
    if "class by class" not in text:
        return {}
    part = section(text, "The consolidated model and the baseline, class by class")
    header = next(line for line in part.splitlines() if line.startswith("| class |"))
    names = [c.strip() for c in header.split("|")[2:-1]]
    row = next(line for line in part.splitlines() if line.startswith("| **all** |"))
    return dict(zip(names, (float(c.strip().strip("*")) for c in row.split("|")[2:-1])))


def main_table_accuracies(text):
    part = section(text, "Consolidated model")
    found = {}
    for line in part.splitlines():
        m = re.match(r"\| (baseline|consolidated)[^|]* \| \d+ \| ([\d.]+) \|", line)
        if m:
            found[m.group(1)] = float(m.group(2))
    return found


def test_a_retrained_model_never_shows_its_old_evaluation(mnist_dir, tmp_path):
    out = tmp_path / "eval"
    # epochs of one batch: which evaluation is shown does not depend on the batches trained
    code, _, err = run_script("main_consolidated", one_batch(tiny_argv(mnist_dir, out)))
    assert code == 0, err
    code, _, err = run_script("main_consolidated", ["--evaluate", *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    assert class_table_accuracies(text) == main_table_accuracies(text) and len(main_table_accuracies(text)) == 2
    evaluation = out / "results" / "consolidated_consolidated_eval.json"
    kept = tmp_path / "old_eval.json"
    shutil.copy(evaluation, kept)

    # a rerun that replaces the consolidated model's checkpoint takes its evaluation away
    code, _, err = run_script("main_consolidated", ["--fresh", "--values", "consolidated",
                                                    *one_batch(tiny_argv(mnist_dir, out, epochs=2))])
    assert code == 0, err
    assert not evaluation.exists() and not (out / "images" / "consolidated_consolidated_confusion.png").exists()
    assert (out / "results" / "consolidated_baseline_eval.json").exists()
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    assert set(class_table_accuracies(text)) == {"baseline"}
    assert class_table_accuracies(text)["baseline"] == main_table_accuracies(text)["baseline"]

    # an evaluation of other weights (left by another copy, or written before evaluations named
    # their run) is not shown, and the report says why
    shutil.copy(kept, evaluation)
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    assert set(class_table_accuracies(text)) == {"baseline"}
    assert "Not shown: `results/consolidated_consolidated_eval.json`" in text
    legacy = json.loads(kept.read_text())
    del legacy["run_id"]
    evaluation.write_text(json.dumps(legacy))
    assert report.main(["--out", str(out)]) == 0
    assert "Not shown: `results/consolidated_consolidated_eval.json`" in (out / "results" / "REPORT.md").read_text()

    # evaluating it again brings it back, matching the record (beside the baseline's evaluation,
    # still that of the baseline's weights, which the rerun left alone)
    code, _, err = run_script("main_consolidated", ["--evaluate", "--values", "consolidated",
                                                    *tiny_argv(mnist_dir, out, epochs=2)])
    assert code == 0, err
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    assert class_table_accuracies(text) == main_table_accuracies(text) and "Not shown" not in text


def test_allow_partial_needs_from_results(mnist_dir, tmp_path):
    code, _, err = run_script("main_consolidated", ["--allow-partial", *tiny_argv(mnist_dir, tmp_path / "x")])
    assert code == 2 and "--allow-partial" in err and "--from-results" in err
    assert len(err.strip().splitlines()) == 1


def test_a_plan_that_is_not_ours_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "results").mkdir()
    with open(results.plan_path(str(tmp_path), "activation"), "w") as f:
        f.write('{"runs": [1, 2]}')
    with pytest.raises(results.ResultsError, match="planned"):
        results.read_plan(str(tmp_path), "activation")
