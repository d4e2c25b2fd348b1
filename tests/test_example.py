"""docs/example/: the worked study. Its one command runs the whole study (shrunk here by the
flags it passes on), and what is committed there is what that command and report.py make."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import child_env, write_mnist_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "docs", "example")
SCRIPT = os.path.join(EXAMPLE, "run.sh")
EXPERIMENTS = ("learning_rate", "optimizer", "weight_regularization", "activation", "dropout", "consolidated")
TINY = ["--train-size", "32", "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--epochs", "1",
        "--seeds", "1", "--precision", "fp32", "--device", "cpu", "--fuse", "1"]


def scale_of_script() -> dict:
    """The flags run.sh's scale sets, {flag: value}."""
    text = open(SCRIPT).read()
    body = re.search(r"scale=\((.*?)\)", text, re.S).group(1).split()
    return {flag: value for flag, value in zip(body, body[1:]) if flag.startswith("--")}


@pytest.mark.slow
def test_the_example_command_runs_the_whole_study_and_stops_at_nothing(tmp_path):
    """All five ablations, --tune-lr on activations, the consolidated model from their results,
    its evaluation and the report: every step of run.sh, at a tiny size, from any folder."""
    write_mnist_like(tmp_path / "fm", n_train=400, n_test=40)
    out = tmp_path / "example"
    env = child_env(PYTHON=sys.executable, OUT=str(out))
    proc = subprocess.run(["bash", SCRIPT, "--data-dir", str(tmp_path / "fm"), *TINY], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for experiment in EXPERIMENTS:
        results = json.load(open(out / "results" / f"{experiment}.json"))
        assert results["progress"]["pending"] == [], experiment
        assert all(r["status"] == "completed" for r in results["runs"]), experiment
    activation = json.load(open(out / "results" / "activation.json"))
    assert {r["config"]["lr"] for r in activation["runs"]} == {3e-5, 1e-4, 3e-4}  # x0.3 x1 x3 of Adam's 1e-4
    assert all(r["tune"]["grid"] == ["x0.3", "x1", "x3"] for r in activation["runs"])
    consolidated = {r["name"] for r in json.load(open(out / "results" / "consolidated.json"))["runs"]}
    assert consolidated == {"baseline", "consolidated"}
    assert (out / "results" / "consolidated_consolidated.best_eval.json").exists()
    report = (out / "results" / "REPORT.md").read_text()
    assert all(f"results/{e}.json" in report or e in report for e in EXPERIMENTS)
    kept = sorted(p.name for p in (out / "models").rglob("*.pt"))
    assert kept and all(name.endswith(".best.pt") for name in kept)  # --save best: each run's best epoch only


def committed_results() -> dict:
    """{experiment: its results file} of what docs/example/ holds."""
    return {e: json.load(open(os.path.join(EXAMPLE, "results", f"{e}.json"))) for e in EXPERIMENTS}


def test_the_committed_study_is_the_whole_study_at_the_scale_run_sh_states():
    """Every experiment finished, every setting with seeds 0, 1, 2, every run at run.sh's scale."""
    scale = scale_of_script()
    for experiment, results in committed_results().items():
        assert results["progress"]["pending"] == [], experiment
        seeds = {}
        for run in results["runs"]:
            config = run["config"]
            assert config["dataset"] == scale["--dataset"] and config["save"] == scale["--save"]
            assert (config["image_size"], config["epochs"]) == (int(scale["--image-size"]), int(scale["--epochs"]))
            assert (config["train_size"], config["val_size"], config["test_size"]) == \
                (int(scale["--train-size"]), int(scale["--val-size"]), int(scale["--test-size"]))
            assert run["status"] in ("completed", "diverged"), (experiment, run["name"])
            seeds.setdefault(run["name"], set()).add(run["seed"])
        assert all(s == set(range(int(scale["--seeds"]))) for s in seeds.values()), experiment
    activation = committed_results()["activation"]
    assert all(r["tune"]["grid"] == ["x0.3", "x1", "x3"] for r in activation["runs"])


def test_the_committed_report_is_what_report_py_writes_from_the_committed_results(tmp_path):
    import report
    shutil.copytree(os.path.join(EXAMPLE, "results"), tmp_path / "results")
    shutil.copytree(os.path.join(EXAMPLE, "images"), tmp_path / "images")
    os.remove(tmp_path / "results" / "REPORT.md")
    assert report.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "results" / "REPORT.md").read_text() == open(os.path.join(EXAMPLE, "results", "REPORT.md")).read()
    shown = re.findall(r"\]\((\.\./images/[^)]+)\)", (tmp_path / "results" / "REPORT.md").read_text())
    assert shown and all(os.path.exists(os.path.join(EXAMPLE, "results", path)) for path in shown)


def test_docs_example_md_quotes_only_figures_of_the_report_and_the_records():
    """Every accuracy or difference docs/example.md gives to two decimals is one the report states,
    or one run's own test or best validation accuracy in the committed records."""
    report = open(os.path.join(EXAMPLE, "results", "REPORT.md")).read()
    runs = {f"{100 * r[key]:.2f}" for results in committed_results().values() for r in results["runs"]
            for key in ("test_acc", "best_val_acc") if r.get(key) is not None}
    text = open(os.path.join(ROOT, "docs", "example.md")).read()
    quoted = set(re.findall(r"(?<![\d.])-?\d+\.\d\d(?![\d])", text))
    assert quoted, "docs/example.md quotes no figure of the report"
    assert sorted(q for q in quoted if q not in report and q not in runs) == []
