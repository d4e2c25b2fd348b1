"""Issue 28's tool edges: each tool refuses bad input in one sentence before any work, says
what is true where a user would be misled, and skips or names the files it did not write."""
import json
import os
import pickle
import sys

import numpy as np
import pytest

import data
from conftest import HANG, md5, run_script, tiny_argv, write_cifar, write_idx, write_mnist_like


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# ---------------------------------------------------------------------------
# A dataset whose training labels are all one class

def test_an_idx_dataset_of_one_class_is_refused_before_training(tmp_path):
    folder = tmp_path / "one-class"
    write_mnist_like(folder, n_train=64, n_test=16)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(64, 3, dtype=np.uint8))
    with pytest.raises(data.DataError, match=r"every training label .* is 3 \(3 - three\), a single class"):
        data.load_dataset("mnist", str(folder), download=False)
    code, _, err = run_script("main_activation", ["--values", "relu", *tiny_argv(folder, tmp_path / "out")])
    assert code == 1 and "a single class" in one_line(err)
    assert not (tmp_path / "out" / "results" / "activation").exists() or \
        not os.listdir(tmp_path / "out" / "results" / "activation")


def test_a_cifar_dataset_of_one_class_is_refused(tmp_path, monkeypatch):
    folder, train_list, test_list = write_cifar(tmp_path, "cifar10", per_batch=8, n_test=8)
    root = tmp_path / folder
    relisted = []
    for fname, _ in train_list:
        with open(root / fname, "rb") as f:
            batch = pickle.load(f)
        batch[b"labels"] = [7] * len(batch[b"labels"])
        with open(root / fname, "wb") as f:
            pickle.dump(batch, f)
        relisted.append((fname, md5(root / fname)))
    monkeypatch.setattr(data, "cifar_files", lambda name: (folder, relisted, test_list))
    with pytest.raises(data.DataError, match=r"is 7 \(horse\), a single class"):
        data.load_dataset("cifar10", str(tmp_path), download=False)


# ---------------------------------------------------------------------------
# gpu_check.py and bench.py: bad input refused in one sentence before any work

@pytest.fixture
def no_steps(monkeypatch):
    """gpu_check's steps replaced by a recorder: a refusal must come before any of them."""
    import gpu_check
    started = []
    monkeypatch.setattr(gpu_check, "run", lambda command, timeout: started.append(command) or (1, 0.0, ""))
    return started


def refused_by(main, argv, capsys) -> str:
    """The one line main(argv) refused with, by exit code 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return one_line(capsys.readouterr().err)


def absent_devices():
    """Devices that are not on this machine: a CUDA index no machine has, and MPS where torch
    has none (and CUDA itself where there is no GPU, the case the issue found)."""
    import torch
    return ["cuda:999"] + (["cuda"] if not torch.cuda.is_available() else []) + \
        (["mps"] if not torch.backends.mps.is_available() else [])


@pytest.mark.parametrize("device", absent_devices())
def test_gpu_check_refuses_a_device_that_is_not_there_before_any_step(tmp_path, capsys, no_steps, device):
    import gpu_check
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    line = refused_by(gpu_check.main, ["--device", device, "--data-dir", str(tmp_path / "fmnist"),
                                       "--out", str(tmp_path / "out")], capsys)
    assert f"argument --device: {device!r} is not available here" in line and len(line) < 200
    assert no_steps == [] and not (tmp_path / "out").exists()


def test_gpu_check_refuses_an_out_that_is_a_file_before_any_step(tmp_path, capsys, no_steps):
    import gpu_check
    write_mnist_like(tmp_path / "fmnist", n_train=40, n_test=10)
    (tmp_path / "a-file").write_text("mine")
    line = refused_by(gpu_check.main, ["--device", "cpu", "--data-dir", str(tmp_path / "fmnist"),
                                       "--out", str(tmp_path / "a-file")], capsys)
    assert "argument --out" in line and "is a file, not a folder" in line
    assert no_steps == [] and (tmp_path / "a-file").read_text() == "mine"


def test_bench_caps_the_image_size_as_the_training_scripts_do(monkeypatch, capsys):
    import bench

    def measured(*args):
        raise AssertionError("bench measured an image size the training scripts refuse")
    monkeypatch.setattr(bench, "bench_steps", measured)
    monkeypatch.setattr(bench, "bench_job", measured)
    line = refused_by(bench.main, ["--device", "cpu", "--image-size", "5000"], capsys)
    assert "argument --image-size: 5000 is above 1024" in line
    line = refused_by(bench.main, ["--device", "cpu", "--image-size", "66"], capsys)
    assert "argument --image-size: 66 is below 67" in line


@pytest.mark.parametrize("device", absent_devices())
def test_a_device_that_is_not_there_is_one_short_sentence_everywhere(tmp_path, capsys, device, monkeypatch):
    import bench
    import evaluate
    line = one_line(run_script("main_activation", ["--values", "relu", *tiny_argv(
        tmp_path / "no-data", tmp_path / "out", extra=["--device", device])])[2])
    assert f"argument --device: {device!r} is not available here (" in line and len(line) < 200
    line = refused_by(bench.main, ["--device", device], capsys)
    assert f"argument --device: {device!r} is not available here (" in line and len(line) < 200
    monkeypatch.setattr(evaluate, "load_model", lambda path: (None, {"config": {}}))
    assert evaluate.main(["x.pt", "--device", device, "--out", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"{device!r} is not available here (" in line and len(line) < 200


# ---------------------------------------------------------------------------
# A --data-dir that lacks the data: no silent switch to Debian's Fashion-MNIST

@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    """One tiny fashion-mnist run (1 epoch of one batch, --save both: its best epoch is its last,
    so <run>.best.pt is a hard link to <run>.pt)."""
    from conftest import one_batch
    root = tmp_path_factory.mktemp("fashion")
    write_mnist_like(root / "fmnist", n_train=300, n_test=16, seed=5)
    out = root / "out"
    code, _, err = run_script("main_activation", ["--values", "relu", *one_batch(tiny_argv(
        root / "fmnist", out, dataset="fashion-mnist"))])
    assert code == 0, err
    return dict(data=root / "fmnist", out=out, models=out / "models" / "activation")


def test_evaluate_refuses_a_data_dir_without_the_data_and_says_which_data_it_used(fashion_run, tmp_path,
                                                                                monkeypatch, capsys):
    import evaluate
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(fashion_run["data"]))  # the system's copy
    (tmp_path / "empty").mkdir()
    checkpoint = str(fashion_run["models"] / "relu.pt")
    capsys.readouterr()
    assert evaluate.main([checkpoint, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"not found in {tmp_path / 'empty'}, only in {fashion_run['data']}" in line
    assert not (tmp_path / "results").exists()
    assert evaluate.main([checkpoint, "--out", str(tmp_path)]) == 0  # the run's own data: found where it was
    assert f"16 test images from {fashion_run['data']} (" in capsys.readouterr().out
    evaluation = json.loads((tmp_path / "results" / "activation_relu_eval.json").read_text())
    assert evaluation["data"] == str(fashion_run["data"])


def test_gpu_check_refuses_a_data_dir_without_the_data_before_any_step(tmp_path, monkeypatch, capsys, no_steps):
    import gpu_check
    write_mnist_like(tmp_path / "system", n_train=40, n_test=10)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "system"))
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert gpu_check.main(["--device", "cpu", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"not found in {tmp_path / 'empty'}, only in {tmp_path / 'system'}" in line
    assert no_steps == [] and not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------
# plotting.py beside other tools' JSON files in results/

def test_plotting_skips_and_names_json_files_no_sweep_wrote(fashion_run, tmp_path, capsys):
    import shutil
    import plotting
    shutil.copytree(fashion_run["out"] / "results", tmp_path / "results")
    (tmp_path / "results" / "gpu_check.json").write_text(json.dumps({"device": "cpu", "tiny": True, "steps": {}}))
    (tmp_path / "results" / "zz_notes.json").write_text("[1, 2]")  # a user's own, after the sweep's in order
    capsys.readouterr()
    assert plotting.main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    for name in ("gpu_check", "zz_notes"):
        assert f"skipped {tmp_path / 'results' / name}.json: not a sweep's results file" in printed.out
    assert (tmp_path / "images" / "activation_test_acc.png").exists()
    assert sorted(os.listdir(tmp_path / "images")) == sorted(
        os.path.basename(line) for line in printed.out.splitlines() if line.endswith(".png"))


# ---------------------------------------------------------------------------
# What evaluate.py says of a checkpoint that is not there

def test_a_deleted_last_checkpoint_is_not_blamed_on_save_best(fashion_run, tmp_path, capsys):
    """The run kept both files under --save both, one file under two names (its best epoch was
    its last); the user deleted <run>.pt. evaluate.py says so, not that the run used --save best."""
    import shutil
    import evaluate
    models = tmp_path / "models" / "activation"
    models.mkdir(parents=True)
    shutil.copy(fashion_run["models"] / "relu.best.pt", models)  # what is left after rm relu.pt
    capsys.readouterr()
    assert evaluate.main([str(models / "relu.pt"), "--out", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert "--save best" not in line and "kept both files (--save both), so it was deleted or moved" in line
    assert f"{models / 'relu.best.pt'} holds the same weights" in line


# ---------------------------------------------------------------------------
# A finished run without weights, and a finished run whose merged results file is missing

@pytest.fixture(scope="module")
def save_none_run(mnist_dir, tmp_path_factory):
    """The baseline of main_consolidated.py trained once with --save none: (its flags without
    --save, its --out)."""
    from conftest import one_batch
    out = tmp_path_factory.mktemp("save-none") / "out"
    argv = one_batch(tiny_argv(mnist_dir, out, extra=["--values", "baseline", "--test-size", "4"]))
    code, _, err = run_script("main_consolidated", [*argv, "--save", "none"])
    assert code == 0, err
    return argv, out


def test_evaluate_after_save_none_says_the_run_finished_and_the_way_out(save_none_run):
    """Not "not trained yet; run with the same flags first": that command skips the finished run."""
    argv, out = save_none_run
    code, _, err = run_script("main_consolidated", ["--evaluate", *argv])
    line = one_line(err)
    assert code == 1 and "not trained yet" not in line
    record = out / "results" / "consolidated" / "baseline_seed0.json"
    assert f"baseline finished training (recorded in {record}), but it kept no weights (--save none)" in line
    assert line.endswith("train it again with the same flags plus --values baseline --save both --fresh")
    code, _, err = run_script("main_consolidated", [*argv, "--values", "baseline", "--save", "both", "--fresh"])
    assert code == 0, err
    code, _, err = run_script("main_consolidated", ["--evaluate", *argv])
    assert code == 0, err


def test_a_rerun_without_the_merged_results_file_names_the_record_it_skips_for(save_none_run, tmp_path):
    """After a full disk on results/<experiment>.json, the finished run's record is what a rerun
    finds: the skip names that file, which exists, not the missing merged file."""
    import shutil
    argv, out = save_none_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "results" / "consolidated.json").unlink()
    argv = [str(copy) if arg == str(out) else arg for arg in argv]
    code, printed, err = run_script("main_consolidated", argv)
    assert code == 0, err
    record = copy / "results" / "consolidated" / "baseline_seed0.json"
    assert f"baseline: already completed in {record}; skipping" in printed and record.exists()


# ---------------------------------------------------------------------------
# Ctrl-C while a script starts, before sweep.py is loaded

SCRIPTS = ("main_learning_rate", "main_optimizer", "main_weight_regularization", "main_activation", "main_dropout",
           "main_consolidated")


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_before_sweep_is_imported_is_one_line_and_exit_130(tmp_path, script):
    """A Ctrl-C 0.1 to 0.3 s after start lands in the scripts' first imports. Here the child
    sends SIGINT to itself as it starts to import sweep (a sitecustomize hook, so no timing),
    the earliest moment a slow machine's Ctrl-C reached: one line, and the status of SIGINT,
    which a shell shows as 130."""
    import signal
    import subprocess
    from conftest import ROOT, child_env
    (tmp_path / "sitecustomize.py").write_text("""import os, signal, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "sweep":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
""")
    shell = 'python="$1"; shift; "$python" "$@"; echo "exit $?"'
    proc = subprocess.run(["sh", "-c", shell, "sh", sys.executable, f"{script}.py", "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG, env=child_env(PYTHONPATH=str(tmp_path)),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert one_line(proc.stderr) == "interrupted before any work began; nothing was written"
    assert proc.stdout == "exit 130\n" and not (tmp_path / "out").exists()


def test_gpu_check_checks_its_device_without_a_tensor_on_it(tmp_path, monkeypatch, capsys, no_steps):
    """gpu_check.py's own process must leave the GPU whole to the steps it starts: its device
    check puts no tensor on a GPU (a CUDA context holds hundreds of MB for as long as it lives)."""
    import torch
    import gpu_check
    from core import device as devices
    real, touched = torch.empty, []
    monkeypatch.setattr(devices.torch, "empty", lambda *a, device=None, **k: touched.append(str(device)) or
                        real(*a, device=device, **k))
    with pytest.raises(ValueError, match="'cuda:999' is not available here"):
        devices.usable_device("cuda:999", touch=False)
    refused_by(gpu_check.main, ["--device", "cuda:999", "--out", str(tmp_path)], capsys)
    assert not [device for device in touched if device.startswith(("cuda", "mps"))] and no_steps == []
