"""Issue 28, two minor cases: the disk check counts only what a sweep can write (no resume
file for a run with no epoch after which one is due), and a sweep stopped, then finished with
fewer --values, can be told finished: it names the runs its plan still holds and
--forget-pending drops them, never while another sweep of the experiment is under way."""
import collections
import json
import shutil

import alexnet
from core import disk
import main_consolidated
import plotting
import report
from core import results
from core import storage
import sweep
import train
from conftest import as_group, fabricated, one_batch, run_script, tiny_argv


def skip_plots(monkeypatch):
    monkeypatch.setattr(plotting, "plot_experiment", lambda results, images_dir: [])  # not the subject here


# ---------------------------------------------------------------------------
# The disk check

def needs_of(settings: list, base: dict, fuse=4) -> dict | None:
    """The disk estimate of a sweep of settings, one seed, none of its runs trained yet."""
    jobs = sweep.plan(settings, base, 1)
    return sweep.disk_needs(jobs, base, {job.stem: 0 for job in jobs}, fuse, "/nonexistent/models/x",
                            alexnet.parameter_count)


def test_the_estimate_counts_a_resume_file_only_where_a_run_has_an_epoch_after_which_one_is_due():
    base = {**train.DEFAULTS, "dataset": "cifar10"}
    plan = [(f"s{i}", {}) for i in range(5)]
    file = disk.final_bytes(alexnet.parameter_count(base["image_size"], 10))
    resume = disk.resume_bytes(alexnet.parameter_count(base["image_size"], 10), base["optimizer"], with_best=True)
    one = needs_of(plan, {**base, "epochs": 1})
    assert one["k"] == 0 and one["resume"] == 0
    assert one["low"] == one["high"] == 5 * file  # and its best epoch is its last: one checkpoint a run
    two = needs_of(plan, {**base, "epochs": 2})
    assert two["low"] == 5 * file + resume and two["high"] == 5 * 2 * file + 4 * resume
    # --checkpoint-every 2: a 2-epoch run saves none (after epoch 2 it is finished), a 3-epoch run one
    assert needs_of(plan, {**base, "epochs": 2, "checkpoint_every": 2})["k"] == 0
    assert needs_of(plan, {**base, "epochs": 3, "checkpoint_every": 2})["k"] == 4


def sweep_on_a_disk_of(monkeypatch, free_of, argv):
    """Run main_learning_rate with argv on a disk whose free space is free_of(the estimate); returns
    (exit code, stdout, stderr, the estimate, how many resume files the sweep wrote)."""
    estimates, resumes = [], []
    real_needs, real_save = sweep.disk_needs, train.save_resume_files
    monkeypatch.setattr(sweep, "disk_needs", lambda *a: estimates.append(real_needs(*a)) or estimates[-1])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free_of(estimates[-1]),
                                                                 free_of(estimates[-1])))
    monkeypatch.setattr(train, "save_resume_files",
                        lambda group, members, epoch: resumes.extend(members) or real_save(group, members, epoch))
    code, out, err = run_script("main_learning_rate", argv)
    return code, out, err, estimates[0], len(resumes)


def test_a_one_epoch_sweep_that_fits_is_not_refused_for_a_resume_file_it_never_writes(mnist_dir, tmp_path,
                                                                                      monkeypatch):
    """The issue's case: room for the checkpoints but not for a resume file. A 1-epoch sweep
    writes none, so it goes on without a warning; a 2-epoch sweep writes one, and its estimate
    counts it."""
    skip_plots(monkeypatch)
    base = {**train.DEFAULTS, "image_size": 67}
    params = alexnet.parameter_count(base["image_size"], 10)
    file, resume = disk.final_bytes(params), disk.resume_bytes(params, base["optimizer"], with_best=True)
    argv = one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path / "one")])
    code, out, err, needs, written = sweep_on_a_disk_of(monkeypatch, lambda needs: file + resume // 2, argv)
    assert code == 0, err
    assert written == 0  # what the estimate leaves out, the sweep indeed never wrote
    assert needs["low"] == needs["high"] == file
    assert "warning" not in err and "no resume file" in out
    monkeypatch.undo()
    skip_plots(monkeypatch)
    argv = one_batch(["--values", "1e-4", "--save", "none", *tiny_argv(mnist_dir, tmp_path / "two", epochs=2)])
    code, out, err, needs, written = sweep_on_a_disk_of(monkeypatch, lambda needs: 10**12, argv)
    assert code == 0, err
    assert written == 1 and needs["k"] == 1 and needs["low"] == needs["high"] == resume


# ---------------------------------------------------------------------------
# A sweep stopped, then finished with fewer --values

def activation(data, out, values, *extra):
    """main_activation.py on the tiny MNIST: one batch of one epoch a run, no checkpoints kept."""
    return run_script("main_activation", one_batch(["--values", *values, "--save", "none", *extra,
                                                    *tiny_argv(data, out)]))


def stopped_after_planning(data, out, monkeypatch, values):
    """A sweep of values interrupted (Ctrl-C) as its first run starts: planned, nothing recorded."""
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(train, "train_group", ctrl_c)
        code, _, err = activation(data, out, values)
    assert code == 130, err
    assert set(results.read_plan(str(out), "activation")) == {f"{v} seed 0" for v in values}


def test_a_narrowed_sweep_names_what_its_plan_still_holds_and_forget_pending_drops_it(mnist_dir, tmp_path,
                                                                                      monkeypatch):
    skip_plots(monkeypatch)
    out = tmp_path / "out"
    stopped_after_planning(mnist_dir, out, monkeypatch, ["relu", "tanh", "elu"])
    code, stdout, err = activation(mnist_dir, out, ["relu", "tanh"])
    assert code == 0, err
    line = next(line for line in stdout.splitlines() if "elu seed 0" in line)
    assert "--forget-pending" in line and "relu" not in line
    # the report and --from-results see elu pending, and name the way out
    text = report.build_report(str(out))
    assert "pending: elu seed 0" in text and "--forget-pending" in text
    code, _, err = run_script("main_consolidated", ["--from-results", "--out", str(out)])
    assert code == 2 and "activation has 2 of 3 runs finished" in err and "--forget-pending" in err
    # the way out: the same narrower command with --forget-pending; it trains nothing
    code, stdout, err = activation(mnist_dir, out, ["relu", "tanh"], "--forget-pending")
    assert code == 0, err
    assert "dropped 1 pending run(s)" in stdout and "elu seed 0" in stdout and "epoch 1/1" not in stdout
    assert set(results.read_plan(str(out), "activation")) == {"relu seed 0", "tanh seed 0"}
    merged = json.loads((out / "results" / "activation.json").read_text())
    assert merged["progress"]["pending"] == [] and merged["progress"]["finished"] == 2
    assert "not finished" not in report.build_report(str(out)).lower()
    assert main_consolidated.unfinished_sentence(main_consolidated.sweep_states(str(out))) is None


def test_forget_pending_drops_nothing_while_another_sweep_of_the_experiment_is_under_way(mnist_dir, tmp_path,
                                                                                         monkeypatch):
    """elu is pending because another process (here sweep A, in this process) is training it:
    the narrower sweep B with --forget-pending, finishing meanwhile, must leave it planned."""
    skip_plots(monkeypatch)
    out = tmp_path / "out"
    trained = fabricated({(name, 0): (0.5, 0.5) for name in ("relu", "tanh", "elu")}, "activation")
    monkeypatch.setattr(train, "train_group", as_group(trained))
    code, _, err = activation(mnist_dir, out, ["relu", "tanh"])
    assert code == 0, err
    inside = []

    def train_group_of_a(configs, *args, **kwargs):  # sweep A, while it trains elu, lets sweep B end
        inside.append(activation(mnist_dir, out, ["relu", "tanh"], "--forget-pending"))
        inside.append(set(results.read_plan(str(out), "activation")))
        return as_group(trained)(configs, *args, **kwargs)

    monkeypatch.setattr(train, "train_group", train_group_of_a)
    code, _, err = activation(mnist_dir, out, ["elu"])
    assert code == 0, err
    (b_code, _, b_err), plan_after_b = inside
    assert b_code == 1 and "another process is sweeping activation" in b_err and "nothing dropped" in b_err
    assert "elu seed 0" in plan_after_b
    merged = json.loads((out / "results" / "activation.json").read_text())
    assert merged["progress"]["pending"] == [] and merged["progress"]["finished"] == 3
    # once no sweep is under way, the presence lock is free again
    with storage.Presence(results.sweeping_path(str(out), "activation")).alone() as alone:
        assert alone
