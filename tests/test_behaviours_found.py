"""Behaviours that mechanical mutants (tests/mutants.py --since / --all) found untested: each
test here failed on the mutant named in its docstring and passes on the code."""
import json
import math

import pytest
import torch
from matplotlib.container import ErrorbarContainer

from conftest import load_results
from core import results
from test_pictures import figures  # noqa: F401 (a fixture)
from test_tune_lr import tuned_sweep  # noqa: F401 (a fixture)
from test_gpu_check import fake_gpus, fake_steps, write_mnist_like


def test_every_gpu_check_step_records_the_command_it_ran_without_its_scratch_output(monkeypatch, tmp_path):
    """gpu_check.json gives each step's command, to rerun it by hand: the command run, less only
    its scratch --out folder and bench's --json file (mutant: one more word dropped, so that
    '--kernels grouped' or '--epochs 1' lost its value)."""
    import gpu_check
    fake_gpus(monkeypatch)
    fake_run, commands = fake_steps(bench_rate=3000.0, out_of_memory_output="going on as 8 + 8")
    monkeypatch.setattr(gpu_check, "run", fake_run)
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    for tiny in ([], ["--tiny"]):
        commands.clear()
        gpu_check.main([*tiny, "--device", "cuda", "--data-dir", str(tmp_path / "fmnist"), "--out", str(tmp_path)])
        steps = json.loads((tmp_path / "results" / "gpu_check.json").read_text())["steps"]
        recorded = [s["command"] for s in steps.values() if "command" in s]
        assert len(recorded) == len(commands) == 7, (recorded, commands)
        for command, shown in zip(commands, recorded):
            words = list(command)
            for flag in ("--out", "--json"):
                if flag in words:
                    i = words.index(flag)
                    del words[i:i + 2]
            script = next(i for i, w in enumerate(words) if w.endswith(".py"))
            tail = shown.split()[-(len(words) - script):]
            assert tail == words[script:], (tiny, shown, command)
            assert shown.startswith("python ") and "--out" not in shown.split(), shown


def valid_run(**config):
    return {"name": "p0", "params": {"dropout": 0.0}, "seed": 0, "status": "completed", "test_acc": 0.5,
            "best_val_acc": 0.6, "history": {"loss": [1.0], "train_acc": [0.4], "val_acc": [0.6]},
            "config": {"dropout": 0.0, "epochs": 1, **config}}


@pytest.mark.parametrize("size, fine", [(None, True), (1, True), (9000, True), (0, False), (-5, False),
                                        (2.5, False), ("100", False), (True, False)])
def test_a_record_without_a_size_cap_reads_and_a_cap_below_one_is_refused(size, fine):
    """--train-size, --val-size and --test-size are caps; a run without one records null (the
    regime's own size) and reads back; a record whose cap is not a whole number of at least 1 is
    damaged (mutant: 'v is not None or ...', which refused null and let 0 and '100' through)."""
    for key in ("train_size", "val_size", "test_size"):
        problem = results.run_problem(valid_run(**{key: size}))
        assert (problem is None) == fine, (key, size, problem)
        if not fine:
            assert key in problem


def write_dropout(out, val_gap):
    """A dropout sweep of two settings, two seeds each, whose mean best validation accuracies
    differ by val_gap (a fraction) and whose test accuracies differ clearly."""
    runs = []
    for name, p, val, test in (("p0", 0.0, 0.8, 0.70), ("p0.25", 0.25, 0.8 - val_gap, 0.60)):
        for seed in (0, 1):
            run = valid_run(epochs=1)
            run.update(name=name, params={"dropout": p}, seed=seed, best_val_acc=val, test_acc=test + 0.01 * seed)
            del run["config"]  # a results file as fabricated here: no config line in the report
            runs.append(run)
    (out / "results").mkdir(parents=True)
    (out / "results" / "dropout.json").write_text(json.dumps({"experiment": "dropout", "runs": runs}))


@pytest.mark.parametrize("gap_points, tied", [(0.00499, True), (0.0049, True), (0.0051, False), (0.01, False)])
def test_settings_whose_validation_means_print_alike_are_called_tied(tmp_path, gap_points, tied):
    """REPORT.md prints means at two decimals of a percent: two settings whose mean validation
    accuracies differ by less than 0.005 points (so print alike) are named as tied for best;
    from 0.005 up they are not (mutant: the bound divided by 101, not 100)."""
    import report
    write_dropout(tmp_path, gap_points / 100)
    assert report.main(["--out", str(tmp_path)]) == 0
    text = (tmp_path / "results" / "REPORT.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| p0 "))
    assert ("tied on validation with p0.25" in row) == tied, row


def test_the_consolidated_models_are_described_from_their_params_where_records_have_no_config(tmp_path):
    """A record's config is optional (results files made by hand, as here): the report then
    describes each consolidated model from its params (mutant: 'config and params', which
    described nothing and ended the report with a TypeError)."""
    import report
    runs = []
    for name, dropout, val in (("baseline", 0.0, 0.6), ("consolidated", 0.25, 0.7)):
        for seed in (0, 1):
            run = valid_run()
            del run["config"]
            run.update(name=name, seed=seed, best_val_acc=val, test_acc=val - 0.1 + 0.01 * seed,
                       params={"optimizer": "adam", "lr": 1e-4, "l1": 0.0, "l2": 0.0, "activation": "relu",
                               "dropout": dropout})
            runs.append(run)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "consolidated.json").write_text(json.dumps({"experiment": "consolidated",
                                                                      "runs": runs}))
    assert report.main(["--out", str(tmp_path)]) == 0
    text = (tmp_path / "results" / "REPORT.md").read_text()
    assert ("Models as trained: baseline: Adam lr 0.0001, relu, dropout 0, no weight penalty; consolidated: "
            "Adam lr 0.0001, relu, dropout 0.25, no weight penalty.") in text


def test_the_isolation_plot_draws_each_interval_the_results_give(tuned_sweep, figures):
    """A tuned sweep's isolation plot: each setting's error bar, after tuning, spans exactly the
    95% interval over seeds that the results file gives for it (mutant: the bar's lower half
    measured from the mean upwards)."""
    import plotting
    res = load_results(tuned_sweep["out"], "activation")
    plotting.plot_experiment(res, str(tuned_sweep["out"] / "images"))
    ax = figures["activation_isolation.png"].axes[0]
    rows = {r["setting"]: r for r in res["summary"]}  # the comparison at each setting's chosen rate
    spans = set()
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer) and c.get_label().endswith("after tuning"):
            for collection in c.lines[2]:
                spans |= {(round(float(s[0][1]), 6), round(float(s[1][1]), 6)) for s in collection.get_segments()}
    expected = {(round(100 * rows[n][f"{key}_ci95"][0], 6), round(100 * rows[n][f"{key}_ci95"][1], 6))
                for n in rows for key in ("best_val_acc", "test_acc")}
    assert spans == expected and len(expected) == 4, (spans, expected)


def test_every_accuracy_plot_of_a_tuned_sweep_draws_chance(tuned_sweep, figures):
    """Each plot in accuracy (the curves, the test bars, the isolation plot after tuning) draws
    the dashed chance line at 100 / classes percent; the loss plot does not."""
    import plotting
    res = load_results(tuned_sweep["out"], "activation")
    plotting.plot_experiment(res, str(tuned_sweep["out"] / "images"))
    classes = plotting.num_classes(res)
    assert set(figures) >= {"activation_loss.png", "activation_val_acc.png", "activation_test_acc.png",
                            "activation_isolation.png"}
    for name, fig in figures.items():
        chance = [line for line in fig.axes[0].lines if line.get_label().startswith("chance")]
        if name.endswith("_loss.png"):
            assert chance == [], name
        else:
            assert len(chance) == 1 and list(chance[0].get_ydata()) == [100 / classes] * 2, name
            assert chance[0].get_linestyle() == "--", name


def save_both_run(folder, best_epoch, epochs=3):
    """A --save both run's two files as the sweep writes them: <run>.pt with the last epoch and
    <run>.best.pt with the best validation epoch (their "epoch"); the file's own weights elided."""
    from core import checkpoints
    history = {"loss": [1.0] * epochs, "train_acc": [0.5] * epochs, "val_acc": [0.5] * epochs}
    for path, epoch in ((folder / "run.pt", epochs), (folder / "run.best.pt", best_epoch)):
        checkpoints.save({"config": {"save": "both"}, "history": history, "epoch": epoch, "model": {}}, str(path))
    return folder / "run.pt", folder / "run.best.pt"


@pytest.mark.parametrize("best_epoch", [2, 3])
def test_a_missing_best_file_never_claims_the_last_file_holds_its_weights(tmp_path, best_epoch):
    """evaluate.py on a deleted <run>.best.pt of a --save both run: the .pt holds the last
    epoch's weights, which are the best ones only where the two names were one file, and then
    the .best.pt is gone with it; so the message sends the user to the .pt or to retrain, and
    never says the .pt holds the same weights (mutant: 'not best or', which said so whenever
    the .pt's epoch was its last, i.e. always)."""
    import evaluate
    last, best = save_both_run(tmp_path, best_epoch)
    best.unlink()
    said = evaluate.missing_checkpoint(str(best))
    assert "does not exist" in said and "or retrain the run (--fresh)" in said and "same weights" not in said


@pytest.mark.parametrize("best_epoch, same", [(3, True), (2, False)])
def test_a_missing_last_file_says_whether_the_best_file_holds_the_same_weights(tmp_path, best_epoch, same):
    import evaluate
    last, best = save_both_run(tmp_path, best_epoch)
    last.unlink()
    said = evaluate.missing_checkpoint(str(last))
    assert ("holds the same weights (its best epoch was its last)" in said) == same, said


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_run_whose_loss_is_not_finite_says_so_not_that_fp16_overflowed(mnist_dir, monkeypatch, capsys, bad):
    """A diverged run's line names its cause: the loss it reached, not fp16's loss scale
    (mutant: the two causes' messages swapped)."""
    import train
    from conftest import run_config, tiny_split_of
    ds, split = tiny_split_of(mnist_dir, "subset", 16, 16, 16)
    real = train.train_one_epoch
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **k: [[bad, correct] for _, correct in real(*a, **k)])
    (record,) = train.train_group([run_config(epochs=2, train_size=16)], split, ds.num_classes)
    said = capsys.readouterr()
    text = said.out + said.err
    assert record["status"] == "diverged"
    assert f"loss is {bad / 16}" in text and "in epoch 1; stopping this run as diverged" in text, text
    assert "overflowed" not in text


def test_images_per_second_are_the_images_over_the_seconds_between_the_two_waits(monkeypatch):
    """bench.py's and --fuse auto's images/s: the images the timed steps held over the seconds
    from the first wait for the device to the second (mutant: the start added, not subtracted)."""
    from core import throughput
    clock = iter([100.0, 102.5])
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    assert throughput.images_per_s(lambda steps: 50 * steps, 2, torch.device("cpu")) == 40.0


def sweep_context(world: int, strategy: str = "spread", shard=None, rank: int = 0, models_dir: str = "unused",
                  fresh: bool = False):
    """A Context as a sweep of 2 settings builds it, for the stages that take one."""
    import argparse
    from core.context import Context
    args = argparse.Namespace(strategy=strategy, shard=shard, seeds=1, tune_lr=None, out="unused", fresh=fresh)
    return Context("activation", args, {"image_size": 67, "epochs": 2, "precision": "fp32"}, torch.device("cpu"),
                   ["relu", "tanh"], [], None, models_dir, rank, world)


@pytest.mark.parametrize("world, strategy, shard, how", [
    (1, "spread", None, ""), (2, "spread", None, ", 2 processes, runs spread over them"),
    (2, "ddp", None, ", 2 processes, each run data-parallel over all"), (1, "spread", (1, 3), ", shard 1/3")])
def test_the_opening_line_names_processes_only_where_there_are_several(capsys, world, strategy, shard, how):
    """A sweep's first line says what it trains, on what and how; processes only where torchrun
    started several (mutant: world > 1 -> >= 1, which said '1 processes' of every plain sweep)."""
    import types
    from core.summary import log_start
    dataset = types.SimpleNamespace(name="fashion-mnist", source="/data")
    split = types.SimpleNamespace(test=types.SimpleNamespace(indices=range(5)))
    log_start(sweep_context(world, strategy, shard), dataset, split, (range(8), range(4)), [])
    assert capsys.readouterr().out.strip() == ("activation: 2 settings x 1 seed(s) on fashion-mnist from /data: 8 "
                                               "train / 4 val / 5 test images at 67 px, 2 epochs, cpu, fp32" + how)


@pytest.mark.parametrize("world, strategy, kept", [(1, "spread", None), (1, "ddp", None), (2, "ddp", "ddp"),
                                                   (2, "spread", "spread")])
def test_a_record_names_a_strategy_only_where_several_processes_trained(world, strategy, kept):
    """trained_on.strategy: how the processes shared the work, or None for a single process,
    whatever --strategy said (mutant: world > 1 -> >= 1)."""
    from core.context import trained_on
    on = trained_on(sweep_context(world, strategy))
    assert on["strategy"] == kept and on["world_size"] == world and on["device"] == "cpu"


def test_the_timing_table_says_which_k_ran_out_of_memory():
    """--fuse auto's table: each K's training images/s and its ratio to K = 1, or 'out of memory'
    where its trial did not fit."""
    from core.fuse_k import timing_table
    assert timing_table({1: 100.0, 2: 180.0, 4: None}).splitlines() == [
        "   K  training images/s  vs K = 1",
        "   1              100.0     1.00x",
        "   2              180.0     1.80x",
        "   4  out of memory"]


def test_a_gpu_checked_without_a_tensor_is_told_apart_by_its_index_alone(monkeypatch):
    """usable_device(touch=False) (gpu_check.py's check) on a machine with 2 CUDA GPUs and no
    MPS: cuda:1 is fine, cuda:2 is refused with the count, and neither touches a GPU nor asks
    about MPS (mutant: the MPS check's 'and' -> 'or', which refused every GPU off a Mac)."""
    from core import device as devices
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices.torch.backends.mps, "is_available", lambda: False)
    real, touched = torch.empty, []
    monkeypatch.setattr(devices.torch, "empty", lambda *a, device=None, **k: touched.append(str(device)) or
                        real(*a, device=device, **k))
    assert devices.usable_device("cuda:1", touch=False) == torch.device("cuda:1")
    with pytest.raises(ValueError, match="there is no CUDA device 2: this machine has 2"):
        devices.usable_device("cuda:2", touch=False)
    assert touched == []


def test_a_cpu_s_free_memory_is_meminfo_s_available_kib_in_bytes(monkeypatch):
    """On a CPU, K's memory bound reads MemAvailable (in KiB) from /proc/meminfo, in bytes;
    where the file cannot be read, the available pages times the page size."""
    import io
    from core import fuse_k
    meminfo = "MemTotal:       8000000 kB\nMemFree:         100 kB\nMemAvailable:    2048 kB\n"
    monkeypatch.setattr(fuse_k, "open", lambda path, *a, **k: io.StringIO(meminfo), raising=False)
    assert fuse_k.free_memory(torch.device("cpu")) == 2048 * 1024

    def unreadable(path, *a, **k):
        raise PermissionError(path)
    monkeypatch.setattr(fuse_k, "open", unreadable, raising=False)
    monkeypatch.setattr(fuse_k.os, "sysconf", {"SC_AVPHYS_PAGES": 5, "SC_PAGE_SIZE": 4096}.get)
    assert fuse_k.free_memory(torch.device("cpu")) == 5 * 4096


@pytest.mark.parametrize("rank", [0, 1])
def test_under_ddp_no_rank_goes_on_before_fresh_removed_the_resume_files(tmp_path, monkeypatch, rank):
    """--fresh --strategy ddp: rank 0 removes the group's resume files, and every rank waits at a
    barrier that rank 0 reaches only once they are gone, so that no rank resumes from one
    (mutant: the barrier dropped)."""
    import types
    from core import claims
    stems = ["activation_relu_s0", "activation_tanh_s0"]
    for stem in stems:
        (tmp_path / f"{stem}.resume.pt").write_bytes(b"old")
    at_barrier = []
    monkeypatch.setattr(claims.dist, "barrier", lambda: at_barrier.append(sorted(p.name for p in tmp_path.iterdir())))
    ctx = sweep_context(2, "ddp", rank=rank, models_dir=str(tmp_path), fresh=True)
    claims.start_afresh(ctx, [types.SimpleNamespace(stem=stem) for stem in stems])
    left = [] if rank == 0 else [f"{stem}.resume.pt" for stem in stems]  # only rank 0 removes them
    assert at_barrier == [left]
