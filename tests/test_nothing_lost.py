"""Nothing lost, nothing half-written: interrupts at any moment (inside checkpoint and
results writes too), full disks, unwritable outputs, damaged resume files, degenerate
data and damaged results files each end with one sentence, leave no temporary file,
and keep every finished run."""
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import (HANG, ROOT, child_env, load_results, one_batch, paused_command, run_script, tiny_argv,
                      wait_for, whole_and_cut_lr_run, write_image_folder, write_idx, write_mnist_like)


def temporary_files(folder):
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")] if folder.exists() else []


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def tmpfs(path, size="30m", read_only=False):
    """A real small filesystem at path, or skip where this machine does not allow mounting."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ---------------------------------------------------------------------------
# Interrupts

def ctrl_c_inside_torch_save(monkeypatch, target: str):
    """Send SIGINT to this process from inside torch.save's writes to a file whose name
    contains target, as a Ctrl-C during a checkpoint write does."""
    real = torch.save

    class Writer:
        def __init__(self, f):
            self.f, self.sent = f, False

        def write(self, b):
            if not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)
            return self.f.write(b)

        def flush(self):
            return self.f.flush()

    def save(obj, f, *args, **kwargs):
        if target in getattr(f, "name", ""):
            return real(obj, Writer(f), *args, **kwargs)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


# a resume file is written between epochs (2 epochs: after epoch 1); the finished run's checkpoint after
# the last epoch, which for that write is the only one needed
@pytest.mark.parametrize("target, epochs", [(".resume.pt", 2), ("lr_0.0001.pt", 1)])
def test_ctrl_c_inside_a_checkpoint_write_ends_cleanly_and_the_rerun_finishes(mnist_dir, tmp_path, monkeypatch,
                                                                              target, epochs):
    out = tmp_path / "out"
    argv = one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, out, epochs=epochs)])
    with monkeypatch.context() as m:
        ctrl_c_inside_torch_save(m, target)
        code, stdout, err = run_script("main_learning_rate", argv)
    assert code == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err and "failed" not in err
    assert temporary_files(out) == []
    records = list((out / "results" / "learning_rate").glob("*.json")) if (out / "results").exists() else []
    assert all(json.loads(p.read_text())["status"] != "failed" for p in records)
    code, stdout, err = run_script("main_learning_rate", argv)
    assert code == 0, err
    if target == ".resume.pt":  # the checkpoint was written whole: the rerun goes on from it
        assert "resuming from epoch 2 of 2" in stdout
    else:  # the finished run was recorded whole before the interrupt took effect
        assert "already completed" in stdout
    (run,) = load_results(out, "learning_rate")["runs"]
    assert run["status"] == "completed" and len(run["history"]["loss"]) == epochs


def test_ctrl_c_inside_a_results_write_keeps_the_previous_file(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    code, _, err = run_script("main_learning_rate", one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, out)]))
    assert code == 0, err
    before = (out / "results" / "learning_rate.json").read_text()
    from core import storage
    real = storage.os.fsync

    def fsync(fd):  # the write that records lr_0.001 (the sweep's start rewrites the file too: its plan)
        if holds_run(fd, ".learning_rate.json.", "lr_0.001"):
            os.kill(os.getpid(), signal.SIGINT)
        return real(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    code, _, err = run_script("main_learning_rate", one_batch(["--values", "1e-4", "1e-3", *tiny_argv(mnist_dir, out)]))
    assert code == 130 and "Traceback" not in err
    assert temporary_files(out) == []
    after = json.loads((out / "results" / "learning_rate.json").read_text())
    # the write was finished, not cut: the file is whole and holds both runs
    assert {r["name"] for r in after["runs"]} == {"lr_0.0001", "lr_0.001"}
    assert before != (out / "results" / "learning_rate.json").read_text()


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
@pytest.mark.slow
def test_sigterm_ends_with_143_and_one_line_and_the_rerun_resumes(mnist_dir, tmp_path):
    out = tmp_path / "out"
    argv = one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, out, epochs=2)])
    command, paused = paused_command(tmp_path, "main_learning_rate", argv)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    try:
        wait_for(paused, proc)  # epoch 1 saved; a scheduler's SIGTERM arrives in the middle of the run
        proc.send_signal(signal.SIGTERM)
        stdout, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in one_line(err)
    assert temporary_files(out) == []
    code, stdout, err = run_script("main_learning_rate", argv)
    assert code == 0, err
    assert "resuming from epoch 2 of 2" in stdout
    assert load_results(out, "learning_rate")["runs"][0]["status"] == "completed"


# ---------------------------------------------------------------------------
# Full disks and unwritable outputs

def test_a_full_disk_stops_the_sweep_with_one_sentence_and_no_temporary_files(mnist_dir, tmp_path):
    with tmpfs(tmp_path / "small") as out:
        code, stdout, err = run_script("main_learning_rate",
                                       one_batch(["--values", "1e-4", "1e-3", *tiny_argv(mnist_dir, out, epochs=2),
                                                  "--no-disk-check"]))  # past the check before training (test_disk.py)
        assert code == 1
        line = one_line(err)
        assert "No space left on device" in line and str(out) in line and "run the same command again" in line
        assert "lr_0.001 epoch" not in stdout  # the sweep stopped instead of trying the next setting
        assert temporary_files(out) == []


def holds_run(fd, prefix, run=None) -> bool:
    """Whether fd is a temporary file whose name starts with prefix and, where run is given, a
    results file that holds run's record (not only lists it as planned)."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    if not os.path.basename(path).startswith(prefix):
        return False
    if run is None:
        return True
    with open(path) as f:
        return any(r.get("name") == run for r in json.load(f).get("runs", []))


def enospc_on(monkeypatch, prefix, run=None):
    """Make fsync fail with ENOSPC on temporary files whose name starts with prefix (and that
    hold run's record, where run is given)."""
    from core import storage
    real = storage.os.fsync

    def fsync(fd):
        if holds_run(fd, prefix, run):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)


def test_a_results_write_that_cannot_complete_leaves_the_previous_file(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = one_batch(["--values", "1e-4", "1e-3", *tiny_argv(mnist_dir, out)])
    code, _, err = run_script("main_learning_rate", one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, out)]))
    assert code == 0, err
    path = out / "results" / "learning_rate.json"
    before = path.read_text()
    with monkeypatch.context() as m:
        enospc_on(m, ".learning_rate.json.", "lr_0.001")  # not the rewrite at the sweep's start
        code, _, err = run_script("main_learning_rate", argv)
    assert code == 1
    line = one_line(err)
    assert str(path) in line and "No space left on device" in line
    # the previous whole file stays: the one the sweep's start wrote (its plan now counts 2 runs), with
    # the earlier run's record as it was
    assert json.loads(path.read_text())["runs"] == json.loads(before)["runs"] and temporary_files(out) == []
    # the finished run's own record was written first, so the rerun finds it
    code, stdout, err = run_script("main_learning_rate", argv)
    assert code == 0 and "lr_0.001: already completed" in stdout
    assert {r["name"] for r in load_results(out, "learning_rate")["runs"]} == {"lr_0.0001", "lr_0.001"}


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    target = tmp_path / "afile"
    target.write_text("mine")
    code, stdout, err = run_script("main_learning_rate",
                                   ["--values", "1e-4", *tiny_argv(tmp_path / "no-data", target)])
    assert code == 2
    line = one_line(err)
    assert "--out" in line and "is a file" in line and "no-data" not in line
    assert target.read_text() == "mine"


def test_out_on_a_read_only_filesystem_is_refused_before_any_work(tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as out:
        code, stdout, err = run_script("main_learning_rate",
                                       ["--values", "1e-4", *tiny_argv(tmp_path / "no-data", out)])
    assert code == 2
    line = one_line(err)
    assert "--out" in line and "Read-only file system" in line


def test_plotting_and_report_refuse_an_unwritable_output_in_one_sentence(mnist_dir, tmp_path, capsys):
    import plotting
    import report
    out = tmp_path / "out"
    code, _, err = run_script("main_learning_rate", one_batch(["--values", "1e-4", *tiny_argv(mnist_dir, out)]))
    assert code == 0, err
    shutil.rmtree(out / "images")
    (out / "images").write_text("in the way")
    capsys.readouterr()
    assert plotting.main(["--out", str(out)]) == 1
    assert "images" in one_line(capsys.readouterr().err)
    (out / "results" / "REPORT.md").mkdir()
    assert report.main(["--out", str(out)]) == 1
    assert "REPORT.md" in one_line(capsys.readouterr().err)
    assert temporary_files(out) == []


# ---------------------------------------------------------------------------
# Damaged files

def test_a_truncated_resume_file_is_named_and_the_run_restarts_on_its_own(mnist_dir, tmp_path, monkeypatch):
    argv, reference, cut, resume = whole_and_cut_lr_run(mnist_dir, tmp_path, monkeypatch)
    data = resume.read_bytes()
    resume.write_bytes(data[:len(data) // 2])
    code, stdout, err = run_script("main_learning_rate", argv(cut))
    assert code == 0, err
    assert str(resume) in err and "starting this run from epoch 1" in err and "--fresh" not in err
    (run,) = load_results(cut, "learning_rate")["runs"]
    assert run["status"] == "completed"
    assert run["history"]["loss"] == pytest.approx(reference["history"]["loss"], rel=1e-6)


def write_results_file(out, runs):
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "learning_rate.json").write_text(json.dumps({"experiment": "learning_rate", "runs": runs}))


def good_run(**changes):
    run = {"name": "lr_0.0001", "params": {"lr": 1e-4}, "seed": 0, "status": "completed", "config": {},
           "history": {"loss": [1.0], "train_acc": [0.5], "val_acc": [0.5]}, "test_acc": 0.5, "best_val_acc": 0.5}
    run.update(changes)
    return run


@pytest.mark.parametrize("run", [
    good_run(history={"loss": [1.0], "train_acc": [0.5]}),            # history.val_acc missing
    good_run(seed="0"),                                                # a seed as text would duplicate a run
    good_run(test_acc="high"),
    good_run(status="done"),
    good_run(history={"loss": [1.0], "train_acc": [0.5], "val_acc": ["x"]}),
])
def test_a_damaged_results_file_is_refused_in_one_sentence_everywhere(mnist_dir, tmp_path, capsys, run):
    import plotting
    import report
    out = tmp_path / "out"
    write_results_file(out, [run])
    before = (out / "results" / "learning_rate.json").read_text()
    code, _, err = run_script("main_learning_rate", ["--values", "1e-4", *tiny_argv(mnist_dir, out)])
    assert code == 1 and "is not a results file" in one_line(err)
    assert plotting.main(["--out", str(out)]) == 1
    assert "is not a results file" in one_line(capsys.readouterr().err)
    assert report.main(["--out", str(out)]) == 1
    assert "is not a results file" in one_line(capsys.readouterr().err)
    code, _, err = run_script("main_consolidated", ["--from-results", *tiny_argv(mnist_dir, out)])
    assert code != 0 and "is not a results file" in one_line(err)
    assert (out / "results" / "learning_rate.json").read_text() == before
    assert not (out / "models").exists() and not (out / "images").exists()


# ---------------------------------------------------------------------------
# Degenerate and damaged data: one sentence, exit 1, nothing written

def assert_refused(argv, *fragments, out):
    code, stdout, err = run_script("main_learning_rate", ["--values", "1e-4", *argv])
    assert code == 1, err
    line = one_line(err)
    for fragment in fragments:
        assert fragment in line, line
    assert not out.exists() or list(out.iterdir()) == []


def test_a_split_without_validation_images_is_refused(tmp_path):
    write_image_folder(tmp_path / "imgs", classes=("a", "b"), n_train=20, n_test=2)  # 40 images
    out = tmp_path / "out"
    argv = [*tiny_argv(tmp_path / "imgs", out, dataset="imagefolder")]
    argv[argv.index("--val-size"):argv.index("--val-size") + 2] = []
    argv[argv.index("--train-size"):argv.index("--train-size") + 2] = []
    assert_refused(argv, "subset regime leaves 8 training and 0 validation", out=out)


def test_a_one_class_dataset_is_refused(tmp_path):
    write_image_folder(tmp_path / "imgs", classes=("only",), n_train=60, n_test=2)
    out = tmp_path / "out"
    assert_refused(tiny_argv(tmp_path / "imgs", out, dataset="imagefolder"), "1 class", out=out)


@pytest.mark.parametrize("file, index, value, words", [
    ("train-labels-idx1-ubyte.gz", 3, 12, "training label 12"),
    ("t10k-labels-idx1-ubyte.gz", 0, 200, "test label 200"),
])
def test_labels_outside_the_classes_are_refused(tmp_path, file, index, value, words):
    tx, ty, sx, sy = write_mnist_like(tmp_path / "d", n_train=200, n_test=20)
    labels = (ty if file.startswith("train") else sy).copy()
    labels[index] = value
    write_idx(tmp_path / "d" / file, labels)
    out = tmp_path / "out"
    assert_refused(tiny_argv(tmp_path / "d", out), words, "not one of the 10 classes", out=out)


def test_swapped_image_and_label_files_are_refused(tmp_path):
    write_mnist_like(tmp_path / "d", n_train=200, n_test=20)
    a, b = tmp_path / "d" / "train-images-idx3-ubyte.gz", tmp_path / "d" / "train-labels-idx1-ubyte.gz"
    a.rename(tmp_path / "swap")
    b.rename(a)
    (tmp_path / "swap").rename(b)
    out = tmp_path / "out"
    assert_refused(tiny_argv(tmp_path / "d", out), "swapped", out=out)


def test_a_data_dir_with_three_of_the_four_idx_files_is_refused(tmp_path):
    write_mnist_like(tmp_path / "d", n_train=200, n_test=20)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    out = tmp_path / "out"
    assert_refused(tiny_argv(tmp_path / "d", out, dataset="fashion-mnist"), "3 of the 4",
                   "t10k-labels-idx1-ubyte.gz is missing", out=out)


def test_an_image_too_large_to_decode_is_called_so(tmp_path, monkeypatch):
    from PIL import Image
    write_image_folder(tmp_path / "imgs", n_train=12, n_test=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # every test image is then a "decompression bomb"
    out = tmp_path / "out"
    assert_refused(tiny_argv(tmp_path / "imgs", out, dataset="imagefolder"), "too large", out=out)


# ---------------------------------------------------------------------------
# Small flags

@pytest.mark.parametrize("script, argv, words", [
    ("main_optimizer", ["--values", "adam:"], "no learning rate"),
    ("main_learning_rate", ["--image-size", "10000"], "above 1024"),
])
def test_flags_that_would_waste_a_run_are_refused(tmp_path, script, argv, words):
    code, stdout, err = run_script(script, [*tiny_argv(tmp_path, tmp_path / "out"), *argv])
    assert code == 2 and words in one_line(err)


def test_dropout_minus_zero_is_the_run_without_dropout():
    import main_dropout
    assert main_dropout.make_run("-0") == main_dropout.make_run("0") == ("p0", {"dropout": 0.0})


@pytest.mark.parametrize("flag", ["--steps", "--rounds"])
def test_bench_refuses_zero_steps_or_rounds(tmp_path, flag, capsys):
    import bench
    with pytest.raises(SystemExit) as exc:
        bench.main([flag, "0", "--device", "cpu", "--json", str(tmp_path / "b.json")])
    assert exc.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_ctrl_c_while_the_script_starts_is_one_line(mnist_dir, tmp_path):
    """Ctrl-C arrives while the script loads, as torch starts to load (the child sends it to
    itself at that point: a signal sent after a sleep could land anywhere, even inside torch's
    C++ start-up)."""
    out = tmp_path / "out"
    wrapper = tmp_path / "ctrl_c_at_start.py"
    wrapper.write_text(f"""import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from core import logs
real = logs.one_line_interrupts
def one_line_interrupts():
    real()
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the script goes on to import sweep.py, and torch, next
logs.one_line_interrupts = one_line_interrupts
import runpy
sys.argv[0] = {os.path.join(str(ROOT), "main_activation.py")!r}
runpy.run_path(sys.argv[0], run_name="__main__")  # as python main_activation.py runs it
""")
    # Ctrl-C reaches the child as a shell's foreground job gets it, even where this suite runs
    # with SIGINT ignored (a background job of a script), which a child would inherit
    proc = subprocess.run([sys.executable, str(wrapper), "--values", "relu", *tiny_argv(mnist_dir, out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = proc.stderr
    # -SIGINT: Python ends itself with SIGINT after an interrupt outside main(), 130 in a shell
    assert proc.returncode in (130, -signal.SIGINT)
    assert "interrupted" in one_line(err)
