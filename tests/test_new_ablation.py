"""A new ablation is one new file (core/ablation.py): main_batch_size.py, written into a copy of
the repository, trains, is plotted, has its report section and findings row, and feeds
main_consolidated.py --from-results, with no other file of the copy touched. And the
declarations' order rules: the report's order is the study's, and --from-results judges a
winner that holds only under a setting after the ablation that decides that setting."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

import report
from conftest import HANG, ROOT, child_env, one_batch, tiny_argv
from core.ablation import Ablation, Finding, Requires, decision_order, in_report_order

NEW_SCRIPT = '''"""Batch size: which training batch size trains AlexNet best?

Swept: the batch size. Held fixed: everything else at the study's baseline,
the "subset" regime, 25 epochs. The study did not ask this.
"""
import sys

from core import logs
from core.ablation import Ablation

if __name__ == "__main__":  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
    logs.one_line_interrupts()
import sweep  # noqa: E402


def make_run(value: str):
    size = sweep.parse_number(value, "batch size")
    if size != int(size):
        raise ValueError(f"batch size {value!r} is not a whole number")
    return f"batch{int(size)}", {"batch_size": int(size)}


ABLATION = Ablation(
    name="batch_size", title="Batch size", order=6, doc=__doc__,
    values=["8", "16"], values_help="training batch sizes", make_run=make_run,
    settings=dict(regime="subset", epochs=25),
    decides=("batch_size",),
)


def main(argv=None) -> int:
    return sweep.main(ABLATION, argv)


if __name__ == "__main__":
    sys.exit(main())
'''


def copy_repository(dest):
    """The repository's tracked files (git ls-files) copied into dest; in a copy without git (the
    mutation check's), its files but for the virtual environment and caches."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0:
        paths = filter(None, listed.stdout.decode().split("\0"))
    else:
        skip = {".git", ".venv", ".mutants", "__pycache__", ".pytest_cache", ".pytest-files"}
        paths = [p.relative_to(ROOT) for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    for path in paths:
        source = ROOT / path
        if source.is_file():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / path)


def fingerprint(folder) -> dict:
    """{path: sha256} of every file under folder but Python's caches."""
    found = {}
    for where, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".pytest_cache")]
        for name in files:
            path = os.path.join(where, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def run_in(repo, script, argv):
    proc = subprocess.run([sys.executable, script, *argv], cwd=repo, capture_output=True, text=True, timeout=HANG,
                          env=child_env())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow  # four scripts as processes of their own
def test_a_new_ablation_is_one_file(mnist_dir, tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    copy_repository(repo)
    (repo / "main_batch_size.py").write_text(NEW_SCRIPT)
    before = fingerprint(repo)
    tiny = one_batch(tiny_argv(mnist_dir, out))

    stdout = run_in(repo, "main_batch_size.py", tiny)
    with open(out / "results" / "batch_size.json") as f:
        results = json.load(f)
    assert {(r["name"], r["status"], r["config"]["batch_size"]) for r in results["runs"]} == \
        {("batch8", "completed", 8), ("batch16", "completed", 16)}
    assert "images/batch_size_*.png" in stdout.replace(os.sep, "/")

    (out / "images").rename(tmp_path / "images_of_the_sweep")  # plotting.py draws them again
    drawn = run_in(repo, "plotting.py", ["--out", str(out)]).split()
    assert {os.path.basename(p) for p in drawn} == {f"batch_size_{kind}.png" for kind in
                                                   ("loss", "train_acc", "val_acc", "test_acc", "hparam")}

    run_in(repo, "report.py", ["--out", str(out)])
    text = (out / "results" / "REPORT.md").read_text()
    best = results["best"]["setting"]
    assert "## Batch size\n" in text and "![batch_size hparam](../images/batch_size_hparam.png)" in text
    assert f"| batch_size | - | best: {best} | - |" in text  # the study had no finding to agree with

    stdout = run_in(repo, "main_consolidated.py", ["--from-results", "--values", "consolidated", *tiny])
    size = int(best[len("batch"):])
    assert f"--from-results: batch_size best is {best} (of 2 setting(s); 1 seed(s), " in stdout
    assert stdout.split(f"--from-results: batch_size best is {best}")[1].splitlines()[0].endswith(
        f"): batch_size={size}")
    assert "--from-results: no completed dropout results in" in stdout  # the study's ablations are still asked
    with open(out / "results" / "consolidated.json") as f:
        (run,) = json.load(f)["runs"]
    assert run["params"]["batch_size"] == run["config"]["batch_size"] == size

    assert fingerprint(repo) == before  # nothing of the copy changed, nothing added to it


def declared(name, order, decides=(), requires=None, finding=None):
    return Ablation(name=name, title=name.title(), order=order, doc="", values=[], values_help="",
                    make_run=lambda value: (f"run_{value}", {"x": value}), settings={}, decides=decides,
                    requires=requires, finding=finding)


def test_the_report_follows_the_studys_order_and_from_results_decides_a_required_setting_first():
    assert [a.name for a in report.study()] == ["learning_rate", "optimizer", "weight_regularization", "activation",
                                                "dropout", "consolidated"]
    rate = declared("rate", 1, ("lr",), Requires("optimizer", "adam", "Adam"))
    optimizer = declared("optimizer", 2, ("optimizer", "lr"))
    other = declared("other", 3, ("dropout",))
    final = declared("final", 9, finding=Finding("b", "b is best"))
    assert in_report_order([final, other, optimizer, rate]) == [rate, optimizer, other, final]
    assert decision_order([final, other, rate, optimizer]) == [optimizer, rate, other]
    assert final.published_run() == ("run_b", {"x": "b"}) and rate.published_run() is None


def test_only_a_sweep_of_the_learning_rate_offers_no_tune_lr():
    offered = {a.name: a.tune_lr for a in report.study()}
    assert offered == {"learning_rate": False, "optimizer": True, "weight_regularization": True, "activation": True,
                       "dropout": True, "consolidated": True}
