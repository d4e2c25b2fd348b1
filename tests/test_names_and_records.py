"""Runs are never merged by name, and a damaged tuned record is refused in one sentence.

Every run of an expanded plan has its own name: --tune-lr rates that print alike (and so would
name one run twice, or show two identical rows) are refused before any data loads. A tuned
run's record whose `tune` entry, config numbers or best epoch cannot be true is refused, naming
the file, by every reader: report.py, plotting.py, the sweep itself and --from-results."""
import json
import shutil

import pytest

import plotting
import report
import sweep
from conftest import one_batch, run_script, tiny_argv
from core.ablation import Ablation

TUNED = ["--values", "relu", "--tune-lr", "x1", "x3", "--save", "none"]
DAMAGED = "relu_at_lr0.0003_seed0.json"


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------
# Run names are unique after the grid is expanded

@pytest.mark.parametrize("grid, shown", [
    (["1.0000001e-4", "1.0000002e-4"], "0.0001"),  # both would be relu_at_lr0.0001
    (["3e-4", "3.0000001e-4"], "0.0003"),  # both would be relu_at_lr0.0003
    (["1e-4", "1.0000001e-4"], "0.0001"),  # relu and relu_at_lr0.0001: two "0.0001" rows
    (["1.0000001e-4", "3e-4"], "0.0001"),  # not relu's own rate 1e-4, yet printed as it
])
def test_rates_that_print_alike_are_refused_before_the_data_loads(tmp_path, grid, shown):
    out = tmp_path / "out"
    code, _, err = run_script("main_activation", ["--values", "relu", "--tune-lr", *grid,
                                                  *tiny_argv(tmp_path / "no-data", out)])
    assert code == 2, err
    line = one_line(err)
    assert "argument --tune-lr" in line and "'relu'" in line and shown in line and "no-data" not in line
    assert not out.exists()


def test_rates_that_differ_in_print_are_still_accepted():
    runs, tunes = sweep.tuned_sweep([("relu", {"activation": "relu"})], {"lr": 1e-4},
                                    [("lr", 1e-4), ("lr", 1.00001e-4)])
    assert [name for name, _ in runs] == ["relu", "relu_at_lr0.000100001"]
    with pytest.raises(ValueError, match="print alike"):
        sweep.tuned_sweep([("relu", {"activation": "relu"})], {"lr": 1e-4}, [("lr", 1e-4), ("lr", 1.000001e-4)])



def test_x1_is_each_settings_own_rate_itself():
    """An own rate of more than 6 significant digits (main_optimizer.py --values adam:1.2345678e-4):
    x1 is that rate, and its run keeps the setting's name, where rounding would have made it a
    rate that prints as the own rate without being it."""
    runs, tunes = sweep.tuned_sweep([("adam", {"optimizer": "adam", "lr": 1.2345678e-4})], {"lr": 1e-4},
                                    [("x", 1.0), ("x", 3.0)])
    assert runs == [("adam", {"optimizer": "adam", "lr": 1.2345678e-4}),
                    ("adam_at_lr0.00037037", {"optimizer": "adam", "lr": 0.00037037})]
    assert tunes["adam"]["own_lr"] == 1.2345678e-4

def test_a_plan_that_names_two_runs_alike_is_refused(tmp_path, capsys):
    """A setting named like another setting's run at a tuned rate: the expanded plan would hold
    relu_at_lr0.0003 twice (for each seed), and one run would overwrite the other's record and
    checkpoints. Refused before the data loads, naming the run."""
    out = tmp_path / "out"
    make_run = lambda value: (value, {"activation": "relu"})  # noqa: E731
    argv = ["--values", "relu", "relu_at_lr0.0003", "--tune-lr", "x1", "x3", "--seeds", "2",
            *tiny_argv(tmp_path / "no-data", out)]
    with pytest.raises(SystemExit) as exc:
        sweep.main(Ablation(name="activation", title="Activation", order=0, doc="doc", values=["relu"],
                            values_help="names", make_run=make_run, settings={}), argv)
    assert exc.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert "'relu_at_lr0.0003'" in line and "twice" in line and "no-data" not in line
    assert not out.exists()


# ---------------------------------------------------------------------------
# A damaged tuned record is refused by every reader

@pytest.fixture(scope="module")
def tuned_out(mnist_dir, tmp_path_factory):
    """A real tiny tuned sweep (relu at 1e-4 and 3e-4, one batch of 16 images, one epoch) as it
    left its --out, with its records."""
    out = tmp_path_factory.mktemp("tuned") / "out"
    code, _, err = run_script("main_activation", [*TUNED, *one_batch(tiny_argv(mnist_dir, out))])
    assert code == 0, err
    assert (out / "results" / "activation" / DAMAGED).exists()
    return out


def set_tune(value):
    return lambda run: run.__setitem__("tune", value)


def another_setting(run):
    run["tune"]["setting"] = "tanh"


def config_of_another_setting(run):
    run["config"]["activation"] = run["params"]["activation"] = "tanh"  # its tune says relu


def lr_as_text(run):
    run["config"]["lr"] = "0.0003"


def best_epoch_past_the_end(run):
    run["best_epoch"] = run["epochs_completed"] + 1


DAMAGES = {"tune-empty": (set_tune({}), "tune"),
           "tune-setting-a-number": (set_tune({"setting": 5}), "tune"),
           "lr-as-text": (lr_as_text, "config.lr"),
           "tune-names-another-setting": (another_setting, "tanh"),
           "config-of-another-setting": (config_of_another_setting, "tanh"),
           "best-epoch-past-the-end": (best_epoch_past_the_end, "best_epoch")}


def read_by(reader, out, mnist_dir, capsys):
    """(exit code, stderr) of one reader on out."""
    if reader == "report":
        return report.main(["--out", str(out)]), capsys.readouterr().err
    if reader == "plotting":
        return plotting.main(["--out", str(out)]), capsys.readouterr().err
    if reader == "sweep":
        code, _, err = run_script("main_activation", [*TUNED, *one_batch(tiny_argv(mnist_dir, out))])
        return code, err
    code, _, err = run_script("main_consolidated", ["--from-results", *one_batch(tiny_argv(mnist_dir, out))])
    return code, err


@pytest.mark.parametrize("reader", ["report", "plotting", "sweep", "from-results"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_tuned_record_is_refused_in_one_sentence(tuned_out, mnist_dir, tmp_path, capsys, damage, reader):
    out = tmp_path / "out"
    shutil.copytree(tuned_out, out)
    shutil.rmtree(out / "images", ignore_errors=True)
    path = out / "results" / "activation" / DAMAGED
    change, fragment = DAMAGES[damage]
    run = json.loads(path.read_text())
    change(run)
    path.write_text(json.dumps(run))
    before = path.read_text()
    code, err = read_by(reader, out, mnist_dir, capsys)
    assert code != 0, err
    line = one_line(err)
    assert str(path) in line and "is not a results file" in line and fragment in line, line
    assert path.read_text() == before  # nothing retrained over it
    assert not (out / "results" / "REPORT.md").exists() and not (out / "images").exists()
    assert not (out / "results" / "consolidated").exists()

