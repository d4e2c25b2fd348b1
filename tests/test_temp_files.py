"""Nothing left behind: a writer killed inside a write (SIGKILL, a power cut), or one whose
folder turned unwritable before it could remove its temporary file, leaves that file
(`.<name>.<pid>.<hex>.tmp`, storage.temporary_name) beside the file it was writing. The rerun
of the same command, or with --fresh, removes those of its own runs and of its experiment's
results files once it holds what every writer of them holds (the run's claim, the experiment's
lock), and never a live writer's, another run's or experiment's, or a file of another name."""
import errno
import os
import signal
import subprocess
import sys
import uuid

import pytest

from conftest import HANG, ROOT, child_env, load_results, one_batch, run_script, tiny_argv, wait_for

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

RUN = "lr_0.0001"
EPOCHS = 2  # a resume file is written between epochs, after epoch 1


def argv(data_dir, out, extra=()):
    return one_batch(["--values", "1e-4", *tiny_argv(data_dir, out, epochs=EPOCHS, extra=extra)])


def temporary_files(folder):
    return sorted(str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")) if folder.exists() else []


def dead_pid() -> int:
    """The process id of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def left_by_a_dead_writer(path) -> str:
    """The temporary file a writer of path killed inside its write leaves: its name, a dead pid."""
    folder, base = os.path.split(str(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{base}.{dead_pid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(b"half a file")
    return tmp


def paused_in_write(tmp_path, argv, prefix):
    """(command, marker): main_learning_rate.py as its own process, pausing for good inside the
    first write whose temporary file's name starts with prefix, once that file is written and
    flushed but before it replaces its target, after touching marker: a SIGKILL there is one
    inside the write."""
    marker = tmp_path / "inside-the-write"
    wrapper = tmp_path / "pause_in_write.py"
    wrapper.write_text(f"""import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
import sweep  # first, as the scripts load torch (sweep.py: no garbage collection meanwhile)
real = os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.basename(str(src)).startswith({prefix!r}) and str(src).endswith(".tmp"):
        open({str(marker)!r}, "w").close()
        while True:
            time.sleep(1)  # the test kills this process here
    return real(src, dst, *args, **kwargs)
os.replace = replace
import main_learning_rate
sys.exit(main_learning_rate.main(sys.argv[1:]))
""")
    return [sys.executable, str(wrapper), *argv], marker


@pytest.fixture(scope="module")
def reference(mnist_dir, tmp_path_factory):
    """The run done whole, uninterrupted."""
    out = tmp_path_factory.mktemp("whole")
    code, _, err = run_script("main_learning_rate", argv(mnist_dir, out))
    assert code == 0, err
    (run,) = load_results(out, "learning_rate")["runs"]
    return run


# the temporary file of each kind of write: the resume file after epoch 1, the final checkpoint, the
# run's record and the merged results file, written in that order
@pytest.mark.slow
@pytest.mark.parametrize("prefix", [f".{RUN}.resume.pt.", f".{RUN}.pt.", f".{RUN}_seed0.json.", ".learning_rate.json."],
                         ids=["resume", "final", "record", "merged"])
def test_sigkill_inside_a_write_leaves_a_temporary_file_that_the_rerun_removes(mnist_dir, tmp_path, reference,
                                                                                 prefix):
    out = tmp_path / "out"
    command, marker = paused_in_write(tmp_path, argv(mnist_dir, out), prefix)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        wait_for(marker, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (left,) = temporary_files(out)  # what a process killed inside that write leaves
    assert os.path.basename(left).startswith(prefix) and os.path.getsize(left) > 0

    code, stdout, err = run_script("main_learning_rate", argv(mnist_dir, out))
    assert code == 0, err
    assert temporary_files(out) == []
    (run,) = load_results(out, "learning_rate")["runs"]
    assert run["status"] == "completed"
    assert run["history"] == reference["history"] and run["test_acc"] == reference["test_acc"]
    assert (out / "models" / "learning_rate" / f"{RUN}.pt").exists()


@pytest.mark.slow
def test_a_live_writers_temporary_files_are_left_alone(mnist_dir, tmp_path):
    """Another process trains the run (it holds the run's claim) and is inside its resume file's
    write: the same command run meanwhile leaves that process's temporary file alone, and one
    under the same claim named with a process id of no live process here (a writer on another
    machine sharing --out). Once that process is killed, the next rerun removes both."""
    out = tmp_path / "out"
    command, marker = paused_in_write(tmp_path, argv(mnist_dir, out), f".{RUN}.resume.pt.")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        wait_for(marker, proc)
        (live,) = temporary_files(out)
        elsewhere = left_by_a_dead_writer(out / "models" / "learning_rate" / f"{RUN}.pt")
        code, stdout, err = run_script("main_learning_rate", argv(mnist_dir, out))
        assert code == 0, err
        assert f"{RUN}: being trained by another process" in stdout
        assert temporary_files(out) == sorted([live, elsewhere])
        assert proc.poll() is None  # still writing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code, stdout, err = run_script("main_learning_rate", argv(mnist_dir, out))
    assert code == 0, err
    assert temporary_files(out) == []
    (run,) = load_results(out, "learning_rate")["runs"]
    assert run["status"] == "completed" and len(run["history"]["loss"]) == EPOCHS


@pytest.mark.parametrize("fresh", [False, True], ids=["rerun", "fresh"])
def test_a_rerun_removes_its_own_runs_temporary_files_and_nothing_else(mnist_dir, tmp_path, fresh):
    out = tmp_path / "out"
    models, records = out / "models" / "learning_rate", out / "results" / "learning_rate"
    if fresh:  # a finished sweep, which --fresh retrains
        code, _, err = run_script("main_learning_rate", argv(mnist_dir, out))
        assert code == 0, err
    ours = [left_by_a_dead_writer(path) for path in (
        models / f"{RUN}.resume.pt", models / f"{RUN}.pt", models / f"{RUN}.best.pt", records / f"{RUN}_seed0.json",
        out / "results" / "learning_rate.json", out / "results" / "learning_rate.csv",
        out / "results" / ".learning_rate.planned.json")]
    others = [left_by_a_dead_writer(path) for path in (
        models / "lr_0.001.resume.pt",  # a run this sweep does not train
        models / f"{RUN}.resume.pt.bak",  # a file whose name only begins like one of the run's
        records / f"{RUN}_seed1.json",  # another seed's record
        out / "models" / "activation" / "relu.resume.pt",  # another experiment's files
        out / "results" / "activation" / "relu_seed0.json", out / "results" / "activation.json",
        out / "images" / "learning_rate_val_acc.png")]  # plots are written under no lock
    for name in (f".{RUN}.resume.pt.tmp", f".{RUN}.resume.pt.12.notahex0.tmp", f"{RUN}.resume.pt.12.0123abcd.tmp",
                 f".{RUN}.resume.pt.12.0123abcd.tmp.keep"):  # not the names of temporary files
        others.append(str(models / name))
        (models / name).write_text("a user's file")

    code, stdout, err = run_script("main_learning_rate", argv(mnist_dir, out, ("--fresh",) if fresh else ()))
    assert code == 0, err
    assert [p for p in ours if os.path.exists(p)] == []
    assert [p for p in others if not os.path.exists(p)] == []
    (run,) = load_results(out, "learning_rate")["runs"]
    assert run["status"] == "completed" and len(run["history"]["loss"]) == EPOCHS


def test_a_folder_unwritable_inside_a_write_leaves_a_temporary_file_that_the_rerun_removes(mnist_dir, tmp_path,
                                                                                          monkeypatch):
    """The final checkpoint's write fails and its temporary file cannot be removed either (the
    folder turned unwritable meanwhile): the sweep stops with one sentence; once the folder is
    writable again, the rerun removes the file and finishes."""
    from core import storage
    out = tmp_path / "out"
    prefix = f".{RUN}.pt."
    real_fsync, real_remove = storage.os.fsync, storage.os.remove

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(prefix):
            raise OSError(errno.EACCES, "Permission denied")
        return real_fsync(fd)

    def remove(path, *args, **kwargs):
        if os.path.basename(str(path)).startswith(prefix):
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_remove(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(storage.os, "fsync", fsync)
        m.setattr(storage.os, "remove", remove)
        code, _, err = run_script("main_learning_rate", argv(mnist_dir, out))
    assert code == 1 and "Permission denied" in err and "Traceback" not in err
    (left,) = temporary_files(out)
    assert os.path.basename(left).startswith(prefix)

    code, stdout, err = run_script("main_learning_rate", argv(mnist_dir, out))
    assert code == 0, err
    assert temporary_files(out) == []
    (run,) = load_results(out, "learning_rate")["runs"]
    assert run["status"] == "completed" and len(run["history"]["loss"]) == EPOCHS
