"""Horizontal fusion (fused.py, train.train_group): K runs trained as one model must
each be the run trained alone: same history and test accuracy (fp32, within 1e-4
relative), a diverging run leaves the others unchanged, and every run's checkpoint
is a plain AlexNet (a killed group resuming with another K: test_kill_resume.py)."""
import shutil

import pytest
import torch

import alexnet
import data
import sweep
import train
from core import disk
from core import flags
from core import fuse_k
from alexnet import AlexNet
from conftest import load_results, one_batch, run_config, run_script, tiny_argv, tiny_split_of
from core.fused import LAYERS

RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny_split(mnist_dir):
    return tiny_split_of(mnist_dir, "full", 32, 16, 16)


def config(**changes):
    return run_config(train_size=32, test_size=16, **changes)


# four runs that differ in everything a member may: lr, optimizer, dropout p, L1/L2, activation, seed
MEMBERS = [config(lr=1e-4, seed=0),
           config(lr=3e-4, dropout=0.3, seed=1),
           config(l1=1e-4, l2=1e-3, activation="tanh", seed=2),
           config(optimizer="sgd", lr=0.05, activation="elu", dropout=0.2, seed=0)]


def assert_same_run(fused: dict, alone: dict):
    assert fused["status"] == alone["status"]
    for key in ("loss", "train_acc", "val_acc"):
        assert fused["history"][key] == pytest.approx(alone["history"][key], rel=RTOL), key
    assert fused["test_acc"] == pytest.approx(alone["test_acc"], abs=1e-9)


@pytest.fixture(scope="module")
def alone_files(tmp_path_factory):
    """The resume files MEMBERS[2] and MEMBERS[3] write after epoch 1 as they train alone (`alone`)."""
    folder = tmp_path_factory.mktemp("alone")
    return [None, None, *(str(folder / f"r{i}.resume.pt") for i in (2, 3))]


@pytest.fixture(scope="module")
def alone(tiny_split, alone_files):
    """Each of MEMBERS trained alone; MEMBERS[2] and MEMBERS[3] leave their resume files after
    epoch 1 (alone_files), which the resume test resumes as one group."""
    ds, split = tiny_split
    return [train.train_run(c, split, ds.num_classes, path) for c, path in zip(MEMBERS, alone_files)]


@pytest.fixture(scope="module")
def grouped(tiny_split, tmp_path_factory):
    """(records, resume paths): MEMBERS fused with grouped kernels on every layer, as
    test_each_fused_run_is_the_run_trained_alone trains them; MEMBERS[0] and MEMBERS[1] write
    their resume files after epoch 1 (checkpoint_seconds 0), which the resume test resumes alone."""
    ds, split = tiny_split
    folder = tmp_path_factory.mktemp("grouped")
    paths = [str(folder / f"r{i}.resume.pt") for i in range(2)]
    records = train.train_group([{**c, "kernels": "grouped"} for c in MEMBERS], split, ds.num_classes,
                                [*paths, None, None])
    yield records, paths
    shutil.rmtree(folder, ignore_errors=True)  # two runs' weights and Adam states: not kept for the session


@pytest.mark.parametrize("kernels", ["grouped", "split"])
def test_each_fused_run_is_the_run_trained_alone(tiny_split, alone, kernels, request):
    """Both forms, each on every layer (auto picks between them by timing, so a test of auto
    would take whichever path the machine's speed chose): grouped within kernel-order
    differences, split equal. (The grouped runs: the `grouped` fixture, whose resume files
    the resume test reads.)"""
    ds, split = tiny_split
    if kernels == "grouped":
        fused = request.getfixturevalue("grouped")[0]
    else:
        fused = train.train_group([{**c, "kernels": kernels} for c in MEMBERS], split, ds.num_classes)
    for f in fused:
        assert f["kernels"]["kernels"] == {name: kernels for name in LAYERS}
    for f, a in zip(fused, alone):
        assert_same_run(f, a)
        if kernels == "split":
            assert f["history"] == a["history"] and f["test_acc"] == a["test_acc"]
        for name, tensor in a["model"].items():
            assert f["model"][name].shape == tensor.shape
            if kernels == "split":
                assert torch.equal(f["model"][name], tensor), name
            else:  # Adam turns rounding-level gradient differences into lr-sized steps of a few weights
                assert (f["model"][name] - tensor).norm() <= 1e-3 * tensor.norm(), name
    # the runs really differ: fusion did not make them one
    assert len({tuple(f["history"]["loss"]) for f in fused}) == len(MEMBERS)


def test_choosing_kernels_changes_no_weight_and_no_dropout_stream(tiny_split):
    """Timing the forms (auto) runs forward and backward passes: none of it may leave a trace
    in the runs, which then train as they would have without it."""
    ds, split = tiny_split
    group = train.Group([config(dropout=0.5, seed=0), config(dropout=0.3, seed=1, activation="tanh")],
                        ds.num_classes, torch.device("cpu"))
    weights = [group.model.member_state_dict(k) for k in range(2)]
    streams = [g.get_state() for g in group.model.generators]
    x, _ = next(train.group_batches(split.train, [0, 1], 0))
    x = x[:1]  # one image (each member's first) is enough to time every layer in both forms: about a third less CPU
    chosen = group.choose_kernels(x, "fp32", "auto")
    assert chosen["how"].startswith("timed") and set(chosen["seconds"]) >= set(LAYERS)  # both forms were run
    assert all(set(chosen["seconds"][name]) == {"grouped", "split"} for name in LAYERS)
    assert all(torch.equal(g.get_state(), s) for g, s in zip(group.model.generators, streams))
    for k in range(2):
        for name, tensor in group.model.member_state_dict(k).items():
            assert torch.equal(tensor, weights[k][name]), name
    assert all(p.grad is None for p in group.model.parameters())
    assert all(p.grad is None for params in group.params for p in params)


def test_a_diverging_run_leaves_the_group_and_the_others_unchanged(tiny_split, alone):
    """Grouped kernels, given (what auto's timing would pick is not the subject here): every
    member in one convolution and one matmul per layer, where a member's NaN weights could
    reach the others. The others are compared with their runs alone (the `alone` fixture:
    MEMBERS[0] and MEMBERS[1] trained as train_run trains them)."""
    ds, split = tiny_split
    diverging = config(optimizer="sgd", lr=1e12, seed=5)
    members = [{**c, "kernels": "grouped"} for c in (MEMBERS[0], diverging, MEMBERS[1])]
    finished = []
    fused = train.train_group(members, split, ds.num_classes, on_finish=lambda i, r: finished.append(i))
    assert fused[1]["status"] == "diverged" and fused[1]["test_acc"] is None
    assert fused[1]["epochs_completed"] < 2
    assert finished[0] == 1  # recorded as it left, before the others finished
    for i, reference in ((0, alone[0]), (2, alone[1])):
        assert fused[i]["kernels"]["kernels"] == {name: "grouped" for name in LAYERS}
        assert_same_run(fused[i], reference)


def test_a_fused_run_resumes_alone_and_a_run_alone_resumes_fused(tiny_split, alone, alone_files, grouped):
    """Resume files are per run, in one schema: whatever K wrote them, any K reads them.
    The files: those train_group wrote after epoch 1 for MEMBERS[0] and MEMBERS[1] of the
    four fused with grouped kernels (the `grouped` fixture), each resumed alone; and those
    MEMBERS[2] and MEMBERS[3] wrote training alone, resumed as one group."""
    ds, split = tiny_split
    reference = alone[:2]  # each run trained alone, uninterrupted
    fused, paths = grouped
    resumed = [train.train_run(MEMBERS[j], split, ds.num_classes, paths[j]) for j in range(2)]
    for r, ref, f in zip(resumed, reference, fused):
        # epoch 1 is the fused group's, read from its file (a file holds no timing of the epoch it saved,
        # where a run trained from epoch 1 has one): a resume, not a new run
        assert r["timing"]["train_seconds"][0] is None and ref["timing"]["train_seconds"][0] is not None
        assert r["history"]["loss"][0] == f["history"]["loss"][0]
        assert r["epochs_completed"] == 2 and r["kernels"] == {"how": "one run: plain layers"}
        assert_same_run(r, ref)
    # runs alone, resumed fused: split kernels compute each run's own arithmetic, so equal, not close
    together = train.train_group([{**c, "kernels": "split"} for c in MEMBERS[2:]], split, ds.num_classes,
                                 alone_files[2:])
    for r, ref in zip(together, alone[2:]):
        assert r["timing"]["train_seconds"][0] is None  # epoch 1 read from the file the run wrote alone
        assert r["kernels"]["kernels"] == {name: "split" for name in LAYERS}
        assert r["history"] == ref["history"] and r["test_acc"] == ref["test_acc"]


def test_fused_checkpoints_load_into_alexnet_and_give_the_recorded_accuracy(mnist_dir, tmp_path):
    out = tmp_path / "out"
    # one training step (16 images, a batch): the checkpoints and their recorded accuracy are the subject
    code, stdout, err = run_script("main_activation", ["--values", "relu", "tanh", "elu",
                                                       *one_batch(tiny_argv(mnist_dir, out)), "--fuse", "3",
                                                       "--kernels", "split"])
    assert code == 0, err
    assert "fused: 3 runs at once" in stdout
    ds = data.load_dataset("mnist", str(mnist_dir))
    test_x = data.transform_batch(ds.test_images[:16], 67)
    for run in load_results(out, "activation")["runs"]:
        assert sorted(run["fused_with"]) == sorted(f"{n} seed 0" for n in ("relu", "tanh", "elu")
                                                   if n != run["name"])
        ckpt = torch.load(out / "models" / "activation" / f"{run['name']}.pt", weights_only=True,
                          map_location="cpu")
        model = AlexNet(ckpt["num_classes"], ckpt["config"]["activation"], ckpt["config"]["dropout"],
                        image_size=ckpt["config"]["image_size"])
        model.load_state_dict(ckpt["model"])
        model.eval()
        with torch.no_grad():
            acc = (model(test_x).argmax(1) == ds.test_labels[:16]).float().mean().item()
        assert acc == pytest.approx(run["test_acc"], abs=1e-9)


def test_fuse_flag_checks():
    assert flags.fuse("auto") == "auto" and flags.fuse("4") == 4
    for bad in ("0", "-1", "x"):
        with pytest.raises(Exception):
            flags.fuse(bad)
    base = config()
    params = alexnet.parameter_count(227, 10)
    assert fuse_k.choose_fuse(3, [], base, torch.device("cpu"), False, 0, params, None) == (3, {"how": "--fuse 3"})
    assert fuse_k.choose_fuse("auto", [], base, torch.device("cpu"), True, 0, params, None)[0] == 1  # ddp
    assert fuse_k.run_bytes(config(image_size=227), params) > 0.9e9  # weights, grads and Adam's state alone are 0.93 GB


@pytest.mark.parametrize("n, k, sizes", [(7, 4, [4, 3]), (5, 2, [2, 2, 1]), (3, 8, [3]), (4, 1, [1, 1, 1, 1])])
def test_groups_are_few_and_even(tmp_path, n, k, sizes):
    jobs = sweep.plan([(f"s{i}", {}) for i in range(n)], config(), 1)
    assert [len(g) for g in sweep.make_groups(jobs, k, disk.resume_epochs(str(tmp_path), jobs))] == sizes


def test_runs_resumed_from_different_epochs_train_in_separate_groups(tmp_path):
    from core import checkpoints
    jobs = sweep.plan([(f"s{i}", {}) for i in range(3)], config(), 1)
    checkpoints.save({"epoch": 1, "config": jobs[1].config}, checkpoints.resume_path(str(tmp_path), jobs[1].stem))
    groups = sweep.make_groups(jobs, 3, disk.resume_epochs(str(tmp_path), jobs))
    assert sorted([job.name for job in g] for g in groups) == [["s0", "s2"], ["s1"]]


def test_kernels_are_timed_once_per_group_shape_in_a_sweep(mnist_dir, monkeypatch):
    """--kernels auto times both forms of every layer before a group trains; a later group of the
    same shape on the same split (the next K runs of a sweep) takes that choice without timing
    again, and a group of another shape is timed anew (docs/fused.md)."""
    from core import kernels
    timed = []
    measure = kernels._measured_kernels

    def counted(model, x, *rest):
        timed.append((model.k, tuple(x.shape)))
        return measure(model, x, *rest)
    monkeypatch.setattr(kernels, "_measured_kernels", counted)
    _, split = tiny_split_of(mnist_dir, "subset", 16, 16, 16)
    two = [config(seed=s, epochs=1, kernels="auto") for s in (0, 1)]
    for configs in (two, [config(seed=s, epochs=1, kernels="auto") for s in (2, 3)]):
        records = train.train_group(configs, split, 10)
        assert all(r["status"] == "completed" and r["kernels"] for r in records)
    assert len(timed) == 1 and timed[0][0] == 2, timed
    train.train_group([config(seed=s, epochs=1, kernels="auto") for s in (4, 5, 6)], split, 10)
    assert len(timed) == 2 and timed[1][0] == 3, timed
