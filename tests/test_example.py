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
