"""gpu_check.py, the one command that measures every GPU figure the README states, run end
to end on the CPU at a tiny size (issue 16)."""
import json
import os

import pytest
import torch

import alexnet
from core import fused
from conftest import write_mnist_like


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_at_a_tiny_size(tmp_path):
    import gpu_check
    write_mnist_like(tmp_path / "fmnist", n_train=400, n_test=40)
    code = gpu_check.main(["--tiny", "--device", "cpu", "--data-dir", str(tmp_path / "fmnist"),
                           "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "results" / "gpu_check.json").read_text())
    bench = result["steps"]["bench"]["figures"]
    assert [row["fuse"] for row in bench["ours"]] == [1, 2]
    assert set(bench["ours"][1]["kernels"]["kernels"]) == set(fused.LAYERS)
    sweep_run = result["steps"]["sweep"]
    assert sweep_run["exit"] == 0 and sweep_run["runs"] == 2 and sweep_run["training_images"] == 2 * 32
    assert sweep_run["images_per_s_all_in"] > 0 and "how" in sweep_run["fuse"]
    # the steps only a GPU can show, each its own process, at a tiny size on the CPU (issue 29)
    steps = result["steps"]
    assert steps["largest_k"]["exit"] == 0 and steps["largest_k"]["k"] == 2 and steps["largest_k"]["groups"] == [2, 2]
    assert steps["adagrad"]["exit"] == 0 and steps["adagrad"]["status"] == "completed"
    assert steps["compile"]["exit"] == 0 and steps["compile"]["status"] == "completed"
    assert steps["compile"]["backend"] == "eager" and steps["compile"]["dropout"] > 0
    assert "CUDA" in steps["out_of_memory"]["skipped"] and "2 CUDA devices" in steps["spread"]["skipped"]
    assert not any("problem" in step for step in steps.values())


def test_a_step_that_hangs_is_stopped_at_its_limit_with_its_output_kept():
    """gpu_check's time limits fire even while the step prints nothing (issue 29: the output was
    read to its end before the limit was checked, so a hung step blocked for ever). The step
    never ends on its own, so only the limit can end it: no timing is assumed."""
    import gpu_check
    code, _, printed = gpu_check.run(["-c", "import signal; print('started', flush=True); signal.pause()"],
                                     timeout=0.5)
    assert code < 0 and printed == "started\n"


def test_the_tiny_check_sets_no_time_limit(monkeypatch, tmp_path):
    """The tiny check (the test above, on a CPU that other jobs may load) runs its steps without
    wall-clock limits: a busy machine must not fail it; the paper-scale check keeps them."""
    import gpu_check
    limits = []

    def fake_run(command, timeout):
        limits.append(timeout)
        return 1, 0.0, ""
    monkeypatch.setattr(gpu_check, "run", fake_run)
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    for tiny in (True, False):
        limits.clear()
        gpu_check.main([*(["--tiny"] if tiny else []), "--device", "cpu", "--data-dir", str(tmp_path / "fmnist"),
                        "--out", str(tmp_path)])
        assert len(limits) >= 4, limits  # bench, sweep, adagrad, compile at least
        assert all(limit is None for limit in limits) if tiny else all(limit and limit > 0 for limit in limits), \
            (tiny, limits)


def fake_steps(bench_rate, out_of_memory_output="", out_of_memory_groups=(8, 8)):
    """A stand-in for gpu_check.run: bench writes figures with bench_rate images/s at K = 1 (K up
    to 4 timed), the out-of-memory sweep prints out_of_memory_output and records 16 completed runs
    in groups of out_of_memory_groups; every other step fails. Returns (run, commands seen)."""
    commands = []

    def fake_run(command, timeout):
        commands.append(list(command))
        if "bench.py" in command:
            rows = [{"fuse": k, "images_per_s": bench_rate * k} for k in (1, 2, 4)]
            with open(command[command.index("--json") + 1], "w") as f:
                json.dump({"ours": rows}, f)
            return 0, 1.0, ""
        out = command[command.index("--out") + 1] if "--out" in command else ""
        if out.endswith("oom"):
            runs, left = [], list(out_of_memory_groups)
            for size in left:
                runs += [{"status": "completed", "fused_with": ["x"] * (size - 1)}] * size
            os.makedirs(os.path.join(out, "results"))
            with open(os.path.join(out, "results", "learning_rate.json"), "w") as f:
                json.dump({"runs": runs}, f)
            return 0, 1.0, out_of_memory_output
        return 1, 1.0, ""
    return fake_run, commands


def fake_gpus(monkeypatch, memory_gib=16.0, gpus=2):
    import gpu_check
    from core import device
    monkeypatch.setattr(device, "usable_device", lambda name, touch=True: None)
    monkeypatch.setattr(gpu_check, "device_facts", lambda name: {
        "device": "cuda:0", "torch": torch.__version__, "precision_auto": "fp16", "name": "a fake T4",
        "memory_gib": memory_gib, "gpus": gpus})


def command_with(commands, *words):
    found = [c for c in commands if all(w in c for w in words)]
    assert len(found) == 1, (words, commands)
    return found[0]


def test_on_two_gpus_the_check_forces_out_of_memory_spreads_evaluates_at_the_largest_k(monkeypatch, tmp_path):
    """On a (faked) machine with 2 GPUs of 16 GiB, the check also runs (issue 29's 'Done when'):
    16 runs forced into one group at a batch where each run is estimated at a quarter of the device
    (so the group really does not fit, and one run does); 3 runs spread by torchrun over 2 GPUs
    one at a time (one GPU done a run before the other); the largest K bench timed; Adagrad; and
    --compile with dropout, each under its own positive time limit."""
    import gpu_check
    from core import fuse_k
    fake_gpus(monkeypatch)
    fake_run, commands = fake_steps(bench_rate=3000.0, out_of_memory_output="going on as 8 + 8")
    limits = []
    monkeypatch.setattr(gpu_check, "run", lambda command, timeout: (limits.append(timeout), fake_run(command,
                                                                                                       timeout))[1])
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    gpu_check.main(["--device", "cuda", "--data-dir", str(tmp_path / "fmnist"), "--out", str(tmp_path)])
    steps = json.loads((tmp_path / "results" / "gpu_check.json").read_text())["steps"]
    assert all(limit and limit > 0 for limit in limits) and len(limits) == 7, limits

    oom = command_with(commands, "main_learning_rate.py", "--fuse", "16")
    batch = int(oom[oom.index("--batch-size") + 1])
    one_run = fuse_k.run_bytes({"image_size": 227, "batch_size": batch}, alexnet.parameter_count(227, 10))
    assert 16 * one_run >= 3.9 * 16 * 2**30 and one_run <= 16 * 2**30 / 4, batch
    assert oom[oom.index("--seeds") + 1] == "16" and steps["out_of_memory"]["splits"] == 1
    assert steps["out_of_memory"]["groups"] == [8] * 16 and "problem" not in steps["out_of_memory"]

    spread = command_with(commands, "torch.distributed.run")
    assert spread[spread.index("--nproc_per_node") + 1] == "2" and "spread" in spread
    assert spread[spread.index("--fuse") + 1] == "1"
    assert len(spread[spread.index("--values") + 1:spread.index("--strategy")]) == 3  # shares of 2 and 1 runs

    largest = command_with(commands, "main_learning_rate.py", "--seeds", "4")
    assert largest[largest.index("--fuse") + 1] == "4"
    assert "--values" in command_with(commands, "main_optimizer.py") and "adagrad" in command_with(
        commands, "main_optimizer.py")
    compiled = command_with(commands, "--compile")
    assert compiled[0] == "main_dropout.py" and float(compiled[compiled.index("--values") + 1]) > 0  # inductor


def test_a_group_that_fitted_is_not_passed_as_an_out_of_memory_split(monkeypatch, tmp_path):
    """Where the forced group fitted after all (no 'going on as' in the sweep's output), the check
    says the split was never tried and fails, rather than passing a path it did not run."""
    import gpu_check
    fake_gpus(monkeypatch, gpus=1)
    fake_run, _ = fake_steps(bench_rate=3000.0, out_of_memory_output="", out_of_memory_groups=(16,))
    monkeypatch.setattr(gpu_check, "run", fake_run)
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    assert gpu_check.main(["--device", "cuda", "--data-dir", str(tmp_path / "fmnist"), "--out", str(tmp_path)]) == 1
    steps = json.loads((tmp_path / "results" / "gpu_check.json").read_text())["steps"]
    assert "no split" in steps["out_of_memory"]["problem"] and "1 visible" in steps["spread"]["skipped"]


@pytest.mark.parametrize("bench_rate, epochs", [(20_000.0, 25), (1_500.0, 4), (100.0, 1)])
def test_the_paper_scale_sweep_trains_fewer_epochs_on_a_slow_gpu(monkeypatch, tmp_path, bench_rate, epochs):
    """The paper-scale sweep (5 runs x 9,000 images) trains the study's 25 epochs where bench's
    K = 1 rate trains them in SWEEP_TRAINING_S seconds, else as many as fit, at least one: a T4
    must not run past the step's limit (issue 29)."""
    import gpu_check
    fake_gpus(monkeypatch, gpus=1)
    fake_run, commands = fake_steps(bench_rate)
    monkeypatch.setattr(gpu_check, "run", fake_run)
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    gpu_check.main(["--device", "cuda", "--data-dir", str(tmp_path / "fmnist"), "--out", str(tmp_path)])
    paper = command_with(commands, "main_activation.py")
    assert paper[paper.index("--epochs") + 1] == str(epochs)
    steps = json.loads((tmp_path / "results" / "gpu_check.json").read_text())["steps"]
    assert steps["sweep"]["epochs"] == epochs and steps["sweep"]["limit_s"] > 0


@pytest.mark.parametrize("statuses, problem", [(["completed"] * 3, None), (["completed", "failed", "completed"],
                                                                          "not every run completed"),
                                               (["completed"] * 2, "not every run completed")])
def test_the_spread_step_passes_only_where_all_three_runs_completed(monkeypatch, tmp_path, statuses, problem):
    """Step 5 (torchrun spreading 3 runs over 2 GPUs) records each GPU's training seconds and the
    wait between them, and passes only where all 3 runs completed: a failed or missing run is the
    problem it reports, not a pass."""
    import gpu_check
    fake_gpus(monkeypatch)
    fake_run, _ = fake_steps(bench_rate=3000.0, out_of_memory_output="going on as 8 + 8")

    def run(command, timeout):
        if "torch.distributed.run" not in command:
            return fake_run(command, timeout)
        out = command[command.index("--out") + 1]
        os.makedirs(os.path.join(out, "results"))
        runs = [{"status": status, "trained_on": {"device": f"cuda:{i % 2}"}, "train_seconds": 10.0 + i}
                for i, status in enumerate(statuses)]
        with open(os.path.join(out, "results", "learning_rate.json"), "w") as f:
            json.dump({"runs": runs}, f)
        return 0, 1.0, ""
    monkeypatch.setattr(gpu_check, "run", run)
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    gpu_check.main(["--device", "cuda", "--data-dir", str(tmp_path / "fmnist"), "--out", str(tmp_path)])
    spread = json.loads((tmp_path / "results" / "gpu_check.json").read_text())["steps"]["spread"]
    assert spread["exit"] == 0 and spread.get("problem") == problem
    by_device = {"cuda:0": 10.0 + 12.0, "cuda:1": 11.0} if len(statuses) == 3 else {"cuda:0": 10.0, "cuda:1": 11.0}
    assert spread["train_seconds_by_device"] == by_device
    assert spread["waited_s"] == round(max(by_device.values()) - min(by_device.values()), 1)


def test_the_check_first_says_which_device_torch_and_precision_it_measures(monkeypatch, tmp_path, capsys):
    """Every figure the check prints belongs to one device, torch release and precision rule:
    its first line names them."""
    import gpu_check
    fake_gpus(monkeypatch)
    fake_run, _ = fake_steps(bench_rate=3000.0, out_of_memory_output="going on as 8 + 8")
    monkeypatch.setattr(gpu_check, "run", fake_run)
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    gpu_check.main(["--device", "cuda", "--data-dir", str(tmp_path / "fmnist"), "--out", str(tmp_path)])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"gpu_check on a fake T4, torch {torch.__version__}, --precision auto = fp16"
