"""report.py (REPORT.md from the results files of a seeded study) and
main_consolidated.py --from-results (the consolidated model from each ablation's best).

Studies are run through the real scripts on tiny MNIST with train.train_group replaced
by fabricated outcomes, so that every number in the report can be computed by hand;
one consolidated run trains for real."""
import builtins
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

import report
import train
from conftest import as_group, fabricated, load_results, one_batch, run_script, tiny_argv

ROOT = Path(__file__).resolve().parent.parent


# (best val acc, test acc) per seed 0, 1
WINNER = [(0.70, 0.68), (0.66, 0.61)]
LOSER = [(0.60, 0.62), (0.58, 0.51)]
LR = {1e-4: [(0.60, 0.55), (0.62, 0.59)], 3e-4: [(0.50, 0.50), (0.52, 0.51)], 1e-3: [(0.40, 0.30), (0.41, 0.36)]}


def run_activation(mnist_dir, out, monkeypatch, winner):
    loser = "relu" if winner == "leakyrelu" else "leakyrelu"
    table = {(a, s): (WINNER if a == winner else LOSER)[s] for a in (winner, loser) for s in (0, 1)}
    monkeypatch.setattr(train, "train_group", as_group(fabricated(table, "activation")))
    code, _, err = run_script("main_activation", ["--values", "relu", "leakyrelu", "--seeds", "2",
                                                  *tiny_argv(mnist_dir, out)])
    assert code == 0, err


def run_learning_rate(mnist_dir, out, monkeypatch):
    table = {(lr, s): LR[lr][s] for lr in LR for s in (0, 1)}
    monkeypatch.setattr(train, "train_group", as_group(fabricated(table, "lr")))
    code, _, err = run_script("main_learning_rate", ["--values", "1e-4", "3e-4", "1e-3", "--seeds", "2",
                                                     *tiny_argv(mnist_dir, out)])
    assert code == 0, err


def expected_comparison(best, other):
    """'X ± H test-accuracy points ..., p = P, n = 2' for two seeds, from the closed forms for df = 1."""
    d = [o[1] - b[1] for b, o in zip(best, other)]  # other - best, per seed
    mean = sum(d) / 2
    sd = abs(d[0] - d[1]) / math.sqrt(2)
    se = sd / math.sqrt(2)
    half = math.tan(math.pi * 0.475) * se  # t_{0.975, 1}
    p = 1 - 2 / math.pi * math.atan(abs(mean / se))
    diff = (sum(b[1] for b in best) - sum(o[1] for o in other)) / 2
    apart = " The interval excludes 0." if abs(mean) > half else \
        " The interval includes 0: these seeds do not tell the two apart."
    return (f"by {100 * diff:.2f} ± {100 * half:.2f} test-accuracy points "
            f"(95% interval of the paired difference), p = {p:.3g}, n = 2.{apart}"), mean


def section(text, title):
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


@pytest.fixture(scope="module")
def study(mnist_dir, tmp_path_factory):
    """One fabricated study (activation and learning rate, two seeds each), shared by the tests
    that only report on it (each writes the same REPORT.md from the same results files)."""
    out = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_activation(mnist_dir, out, monkeypatch, "leakyrelu")
        run_learning_rate(mnist_dir, out, monkeypatch)
    return out


def test_report_sections_tables_plots_and_verdicts(study, capsys):
    assert report.main(["--out", str(study)]) == 0
    path = study / "results" / "REPORT.md"
    assert str(path) in capsys.readouterr().out
    text = path.read_text()
    assert text.startswith("# Study report")
    headings = re.findall(r"^## (.*)$", text, flags=re.M)
    assert headings == ["Learning rate", "Activation", "The study's findings beside these runs"]

    # Activation: a row per setting with n = 2, mean ± std, the verdict with its uncertainty
    act = section(text, "Activation")
    assert "4 run(s) in `results/activation.json`" in act
    rows = [line for line in act.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in rows}
    assert set(cells) == {"relu", "leakyrelu (best)"}
    assert cells["relu"][0] == "2" and cells["leakyrelu (best)"][0] == "2"
    assert cells["leakyrelu (best)"][1] == f"{100 * 0.645:.2f} ± {100 * 0.07 / math.sqrt(2):.2f}"  # 64.50 ± 4.95
    assert cells["relu"][1] == f"{100 * 0.565:.2f} ± {100 * 0.11 / math.sqrt(2):.2f}"  # 56.50 ± 7.78
    assert cells["relu"][4] == "-8.00"  # vs best, in points
    assert cells["leakyrelu (best)"][4] == "-" and cells["leakyrelu (best)"][6] == "-"
    sentence, mean_diff = expected_comparison(WINNER, LOSER)
    assert mean_diff == pytest.approx(-0.08)
    verdicts = [line for line in act.splitlines() if line.startswith("**Verdict.**")]
    assert len(verdicts) == 1
    verdict = verdicts[0]
    assert verdict == f"**Verdict.** Best by validation accuracy: leakyrelu. leakyrelu leads relu {sentence}"
    assert "by 8.00 ± " in verdict and "p = " in verdict and "n = 2" in verdict
    assert "edge" not in verdict
    assert cells["relu"][6] == re.search(r"p = (\S+), n", verdict).group(1)

    # Learning rate: the best at the edge of a numeric sweep is flagged
    lr = section(text, "Learning rate")
    assert "| lr_0.0001 (best) | 2 |" in lr and "| lr_0.0003 | 2 |" in lr and "| lr_0.001 | 2 |" in lr
    sentence, mean_diff = expected_comparison(LR[1e-4], LR[3e-4])
    assert f"{-100 * mean_diff:.2f}" == "6.50"
    verdict = next(line for line in lr.splitlines() if line.startswith("**Verdict.**"))
    assert f"Best by validation accuracy: lr_0.0001. lr_0.0001 leads lr_0.0003 {sentence}" in verdict
    assert verdict.endswith("The best value lies at the edge of the swept range: widen it before calling it optimal.")

    # plots: linked by paths relative to results/, every one on disk; hparam only for the numeric sweep
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "../images/activation_val_acc.png" in links and "../images/learning_rate_hparam.png" in links
    assert "../images/activation_hparam.png" not in links
    for kind in ("loss", "train_acc", "val_acc", "test_acc"):
        assert f"../images/activation_{kind}.png" in links and f"../images/learning_rate_{kind}.png" in links
    for link in links:
        assert not os.path.isabs(link)
        assert (study / "results" / link).resolve().is_file(), link
    assert all(link in act for link in links if "activation_" in link)

    # the findings table: a row per experiment present, agreement computed from the best settings
    findings = section(text, "The study's findings beside these runs")
    frows = [line for line in findings.splitlines() if line.startswith("| ") and not line.startswith("| ablation")]
    assert [r.split("|")[1].strip() for r in frows] == ["learning_rate", "activation"]
    act_row = next(r for r in frows if r.startswith("| activation "))
    assert act_row == "| activation | LeakyReLU is best | best: leakyrelu | yes |"
    lr_row = next(r for r in frows if r.startswith("| learning_rate "))
    assert lr_row.startswith("| learning_rate | Adam's learning rate 1e-4") and lr_row.endswith("| best: lr_0.0001 | yes |")


def test_report_disagrees_when_relu_wins(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "relu"
    run_activation(mnist_dir, out, monkeypatch, "relu")
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    assert re.findall(r"^## (.*)$", text, flags=re.M) == ["Activation", "The study's findings beside these runs"]
    assert "## Learning rate" not in text
    sentence, mean_diff = expected_comparison(WINNER, LOSER)
    assert "**Verdict.** Best by validation accuracy: relu. relu leads leakyrelu " + sentence in text
    findings = section(text, "The study's findings beside these runs")
    row = next(line for line in findings.splitlines() if line.startswith("| activation "))
    agree = "no" if sentence.endswith("The interval excludes 0.") else "no (not told apart)"
    assert row == f"| activation | LeakyReLU is best | best: relu; relu leads leakyrelu {sentence} | {agree} |"
    assert "| learning_rate |" not in findings


def test_report_on_an_empty_folder(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert report.main(["--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "no results files" in captured.err
    assert "report written" not in captured.out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    bare = tmp_path / "bare"
    bare.mkdir()
    assert report.main(["--out", str(bare)]) == 1
    assert "error:" in capsys.readouterr().err
    assert list(bare.iterdir()) == []


def test_report_reads_nothing_outside_its_folder(study, monkeypatch):
    source = (ROOT / "report.py").read_text()
    assert "../shared" not in source and "'shared'" not in source and '"shared"' not in source
    assert not re.search(r"join\([^)]*shared", source)
    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(os.path.realpath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    assert report.main(["--out", str(study)]) == 0
    monkeypatch.setattr(builtins, "open", real_open)
    root = os.path.realpath(study)
    assert opened and all(p.startswith(root + os.sep) for p in opened), opened
    assert not any(f"{os.sep}shared{os.sep}" in p for p in opened)


# ---------------------------------------------------------------------------
# main_consolidated.py --from-results


def results_run(name, params, seed, val, test, status="completed"):
    done = status == "completed"
    return {"name": name, "params": params, "seed": seed, "status": status,
            "test_acc": test if done else None, "best_val_acc": val if done else None,
            "history": {"loss": [], "train_acc": [], "val_acc": []}}


def write_study(out, optimizer_best="adam", skip=(), dropout_all_failed=False):
    """Fabricated results files of the five ablations, two seeds each, with known bests."""
    settings = {
        "optimizer": [("adam_lr0.0001", {"optimizer": "adam", "lr": 1e-4}, optimizer_best == "adam"),
                      ("sgd_lr0.1", {"optimizer": "sgd", "lr": 0.1}, optimizer_best == "sgd"),
                      ("adagrad_lr0.01", {"optimizer": "adagrad", "lr": 0.01}, False)],
        "learning_rate": [("lr_0.0001", {"lr": 1e-4}, False), ("lr_0.0003", {"lr": 3e-4}, True),
                          ("lr_0.001", {"lr": 1e-3}, False)],
        "weight_regularization": [("l1_0_l2_0", {"l1": 0.0, "l2": 0.0}, False),
                                  ("l1_0_l2_0.0001", {"l1": 0.0, "l2": 1e-4}, True),
                                  ("l1_5e-06_l2_9.5e-05", {"l1": 5e-6, "l2": 9.5e-5}, False)],
        "activation": [("relu", {"activation": "relu"}, False), ("elu", {"activation": "elu"}, True),
                       ("leakyrelu", {"activation": "leakyrelu"}, False)],
        "dropout": [("p0", {"dropout": 0.0}, False), ("p0.3", {"dropout": 0.3}, True),
                    ("p0.25", {"dropout": 0.25}, False)],
    }
    (out / "results").mkdir(parents=True, exist_ok=True)
    for experiment, rows in settings.items():
        if experiment in skip:
            continue
        runs = []
        for name, params, is_best in rows:
            for seed in (0, 1):
                # the best has the highest mean validation accuracy but not the highest test accuracy
                val = (0.80 if is_best else 0.60) + 0.01 * seed
                test = (0.50 if is_best else 0.55) + 0.02 * seed
                status = "failed" if experiment == "dropout" and dropout_all_failed else "completed"
                runs.append(results_run(name, params, seed, val, test, status))
        with open(out / "results" / f"{experiment}.json", "w") as f:
            json.dump({"experiment": experiment, "runs": runs}, f)


def test_consolidated_from_results_takes_each_best(mnist_dir, tmp_path):
    out = tmp_path / "cons"
    write_study(out)
    # one training step (16 images, a batch): which settings the run takes is the subject
    code, stdout, err = run_script("main_consolidated", ["--from-results", "--values", "consolidated",
                                                         *one_batch(tiny_argv(mnist_dir, out))])
    assert code == 0, err
    runs = load_results(out, "consolidated")["runs"]
    assert [(r["name"], r["seed"], r["status"]) for r in runs] == [("consolidated", 0, "completed")]
    expected = {"optimizer": "adam", "lr": 3e-4, "l1": 0.0, "l2": 1e-4, "activation": "elu", "dropout": 0.3}
    assert runs[0]["params"] == expected
    for key, value in expected.items():
        assert runs[0]["config"][key] == value
    ckpt = torch.load(out / "models" / "consolidated" / "consolidated.pt", weights_only=True, map_location="cpu")
    assert {k: ckpt["config"][k] for k in expected} == expected
    lines = [line for line in stdout.splitlines() if line.startswith("--from-results:")]
    behind = "(of 3 setting(s); 2 seed(s), mean best validation accuracy 80.50%)"  # (0.80 + 0.81) / 2
    assert lines == [f"--from-results: optimizer best is adam_lr0.0001 {behind}: optimizer=adam, lr=0.0001",
                     f"--from-results: learning_rate best is lr_0.0003 {behind}: lr=0.0003",
                     f"--from-results: weight_regularization best is l1_0_l2_0.0001 {behind}: l1=0, l2=0.0001",
                     f"--from-results: activation best is elu {behind}: activation=elu",
                     f"--from-results: dropout best is p0.3 {behind}: dropout=0.3"]


def consolidated_with_fake_training(mnist_dir, out, monkeypatch, extra=()):
    calls = []

    def train_run(config, split, num_classes, resume_path=None, desc="run"):
        calls.append(dict(config))
        return {"status": "completed", "history": {"loss": [1.0], "train_acc": [0.5], "val_acc": [0.5]},
                "test_acc": 0.5, "best_val_acc": 0.5, "epochs_completed": 1, "train_seconds": 0.01,
                "model": {"weight": torch.zeros(2)}}

    monkeypatch.setattr(train, "train_group", as_group(train_run))
    code, stdout, err = run_script("main_consolidated", ["--from-results", "--values", "consolidated", *extra,
                                                         *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert len(calls) == 1
    params = load_results(out, "consolidated")["runs"][0]["params"]
    assert {k: calls[0][k] for k in params} == params
    return params, [line for line in stdout.splitlines() if line.startswith("--from-results:")]


def test_consolidated_from_results_keeps_the_study_dropout_without_results(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "nodrop"
    write_study(out, skip=("dropout",))
    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch)
    assert params == {"optimizer": "adam", "lr": 3e-4, "l1": 0.0, "l2": 1e-4, "activation": "elu", "dropout": 0.25}
    path = os.path.join(str(out), "results", "dropout.json")
    assert lines[-1] == f"--from-results: no completed dropout results in {path}; keeping the study's dropout=0.25"
    assert not any("dropout best" in line for line in lines)


def test_consolidated_from_results_keeps_the_study_dropout_when_every_run_failed(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "faileddrop"
    write_study(out, dropout_all_failed=True)
    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch)
    assert params["dropout"] == 0.25
    assert lines[-1].startswith("--from-results: no completed dropout results in ")
    assert lines[-1].endswith("keeping the study's dropout=0.25")


def test_consolidated_from_results_ignores_the_adam_lr_for_sgd(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "sgd"
    write_study(out, optimizer_best="sgd")
    params, lines = consolidated_with_fake_training(mnist_dir, out, monkeypatch)
    assert params == {"optimizer": "sgd", "lr": 0.1, "l1": 0.0, "l2": 1e-4, "activation": "elu", "dropout": 0.3}
    assert lines[0] == ("--from-results: optimizer best is sgd_lr0.1 (of 3 setting(s); 2 seed(s), mean best "
                        "validation accuracy 80.50%): optimizer=sgd, lr=0.1")
    assert lines[1] == "--from-results: learning_rate best lr_0.0003 is for Adam, not sgd; ignored"
    assert len(lines) == 5


def test_report_refuses_an_unreadable_results_file_in_one_sentence(tmp_path, capsys):
    """Like the sweep scripts (sweep.read_results), a truncated results file should end
    report.py with exit code 1 and one line naming the file, not a JSONDecodeError traceback."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "activation.json").write_text('{"experiment": "activation", "runs": [\n')
    try:
        code = report.main(["--out", str(tmp_path)])
    except ValueError as err:  # json.JSONDecodeError
        pytest.fail(f"report.main raised {type(err).__name__}: {err}")
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "activation.json" in err and len(err.strip().splitlines()) == 1
    assert not (results / "REPORT.md").exists()


@pytest.mark.parametrize("ci, words", [((0.004, 0.03), "The interval excludes 0."),
                                       ((-0.03, -0.004), "The interval excludes 0."),
                                       ((-0.01, 0.05), "The interval includes 0: these seeds do not tell the two apart."),
                                       ((0.0, 0.05), "The interval includes 0: these seeds do not tell the two apart.")])
def test_the_verdict_says_in_words_whether_the_seeds_tell_two_settings_apart(ci, words):
    """The paired difference's interval, against 0, in words after the numbers."""
    best = {"test_acc_mean": 0.75, "n": 3, "is_best": True, "vs_best": None}
    other = {"test_acc_mean": 0.73, "n": 3, "vs_best": {"ci95": ci, "p_value": 0.2, "n": 3}}
    sentence = report.compare({"a": best, "b": other}, "a", "b")
    assert sentence.startswith("a leads b by 2.00 ± ")
    assert sentence.endswith("p = 0.2, n = 3. " + words)


@pytest.mark.parametrize("ci, agree", [((-0.03, -0.004), "no"), ((-0.03, 0.01), "no (not told apart)")])
def test_a_lost_finding_says_whether_the_seeds_tell_it_apart(tmp_path, ci, agree):
    """The findings table: the study's pick lost to another setting; 'no' only where the paired
    interval of their difference excludes 0."""
    declared = next(a for a in report.study() if a.name == "dropout")
    rows = {"p0": {"test_acc_mean": 0.75, "best_val_acc_mean": 0.75, "n": 3, "is_best": True, "vs_best": None},
            "p0.25": {"test_acc_mean": 0.74, "best_val_acc_mean": 0.74, "n": 3,
                      "vs_best": {"ci95": ci, "p_value": 0.3, "n": 3}}}
    results = {"experiment": "dropout", "runs": [], "progress": {"pending": []}}
    row = report.finding(declared, results, "p0", rows)
    assert row.endswith(f"| {agree} |")
