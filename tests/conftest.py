"""Shared fixtures: tiny datasets written in the real on-disk formats, and helpers
to run the main_*.py scripts in-process with settings small enough for 2 CPU cores.

Nothing here reads the real datasets under /usr/share/datasets or the network.
"""
import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# seconds a test waits on a child process: a safety net against a hang only, never a measure of
# speed (the suite must pass on a slow machine busy with other jobs, issue 27)
HANG = 1800
RAM_DISK_ROOM = 8 * 2**30  # the tests' files on a RAM disk only where this much is free (a session holds ~2 GB)


def _settle_imports():
    """Import what every test process loads sooner or later, then exclude those objects (half
    a million, none of them garbage) from Python's garbage collections, which otherwise walk
    them all again every few hundred thousand allocations."""
    import gc
    import evaluate  # noqa: F401
    import plotting
    import report  # noqa: F401
    import sweep  # noqa: F401
    plotting._pyplot()
    gc.freeze()


def _set_up_test_process():
    """What every process that runs tests does first (not xdist's controller, which runs none)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N (pytest.ini): N processes share the cores
        import torch
        torch.set_num_threads(1)
    from core import device
    # A sweep on the CPU keeps freed memory for its next step (device.tune_backends): one process,
    # one sweep. A test process runs a whole file of sweeps, fused groups of 4 among them, and
    # would keep its largest peak to the end (5.2 GB seen in one process): here the C library's
    # defaults hand large blocks back, for the suite's memory budget (docs/tests.md).
    device.keep_freed_memory = lambda top=None: False
    if os.environ.get("TESTS_CPU_WITHOUT_BF16"):  # check the suite as a CPU without native bf16 runs it (auto: fp32)
        device.cpu_has_native_bf16 = lambda: False
    _settle_imports()


def _xdist_controller(config) -> bool:
    """This process hands the tests out to xdist's processes and runs none itself (then it
    need not load torch: its start-up comes before theirs)."""
    return (getattr(config.option, "dist", "no") != "no" and not config.option.collectonly
            and not hasattr(config, "workerinput"))


def pytest_configure(config):
    """The tests' files go to pytest's own folder (/tmp/pytest-of-$USER): files the kernel can
    write back and drop, which a RAM disk's cannot be (3.3 GB of the suite's peak memory, seen
    there). TESTS_ON_RAM_DISK=1 puts them on /dev/shm where it has room. xdist's processes each
    take a folder under it. Passing tests' files are removed as they pass (pytest.ini), the rest
    when the session ends, unless a test failed."""
    import shutil
    import tempfile
    if not _xdist_controller(config):
        _set_up_test_process()
    if config.option.basetemp or os.environ.get("PYTEST_XDIST_WORKER") or not os.environ.get("TESTS_ON_RAM_DISK"):
        return
    shm = "/dev/shm"
    try:
        roomy = os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= RAM_DISK_ROOM
    except OSError:
        roomy = False
    if roomy:
        config.option.basetemp = tempfile.mkdtemp(prefix="alexnet-tests-", dir=shm)
        config._ram_disk = config.option.basetemp


# The test files that take longest, longest first (seconds each in one run of the suite on 2 cores,
# summed over its tests). pytest-xdist hands out whole files (pytest.ini: --dist loadfile) in the
# order collected (--no-loadscope-reorder): started first, the long files leave short ones for the
# end, where the two processes then finish close together instead of one waiting on the other.
LONGEST_FIRST = ("test_parallel_runs.py",  # 44 s (at commit 5a6ced9)
                 "test_scripts_e2e.py",  # 37
                 "test_gpu_paths.py",  # 30
                 "test_distributed.py",  # 26
                 "test_fusion.py",  # 23
                 "test_kill_resume.py",  # 22
                 "test_nothing_lost.py",  # 20
                 "test_gpu_check.py",  # 17 (one test)
                 "test_train.py",  # 13
                 "test_pinned.py",  # 13
                 "test_pictures.py",  # 12
                 "test_tune_lr.py",  # 12
                 "test_disk.py")  # 11; the rest as collected


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


def pytest_unconfigure(config):
    import shutil
    folder = getattr(config, "_ram_disk", None)
    if folder and getattr(config, "_tests_failed", False):
        print(f"\nthe files of the tests that failed are kept in {folder} (a RAM disk: remove it when done)")
    elif folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    session.config._tests_failed = exitstatus == pytest.ExitCode.TESTS_FAILED


if os.environ.get("MUTANTS_COVERAGE"):  # tests/mutants.py builds its coverage map: one context per test
    _test = [""]

    def _coverage_context(name):
        import coverage
        os.environ["MUTANTS_TEST_ID"] = name  # the context of the processes started meanwhile
        cov = coverage.Coverage.current()
        if cov is not None:
            cov.switch_context(name)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(item):
        _test[0] = item.nodeid
        _coverage_context(item.nodeid)
        shared = [f"fixture {defs[-1].argname}@{defs[-1].baseid}"
                  for defs in (item._fixtureinfo.name2fixturedefs.get(n) for n in item.fixturenames)
                  if defs and defs[-1].scope != "function"]
        with open(os.path.join(os.environ["MUTANTS_COVERAGE"], f"fixtures-{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps([item.nodeid, shared]) + "\n")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(fixturedef, request):
        """What a module or session fixture runs counts for every test that uses it."""
        shared = fixturedef.scope != "function"
        if shared:
            _coverage_context(f"fixture {fixturedef.argname}@{fixturedef.baseid}")
        yield
        if shared:
            _coverage_context(_test[0])


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
EXPERIMENTS = ("learning_rate", "optimizer", "weight_regularization", "activation", "dropout", "consolidated")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests are hermetic: a missing dataset must fail the same way on a machine that
    could reach the dataset hosts, never download (the download path itself is
    exercised with torchvision's download patched out)."""
    import socket

    def refuse(self, *args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def skip_fsync(monkeypatch):
    """Tests' files are temporary: they skip flushing each one to the disk (a run of the suite
    writes gigabytes of tiny runs' checkpoints). That files are flushed before they replace
    the previous ones is tested on its own (test_pinned.py)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """skip_fsync for every test; module fixtures, which run before it, call skip_fsync themselves."""
    skip_fsync(monkeypatch)


def child_env(**extra):
    """Environment of a script run as its own process: the same number of threads as this
    test process, so that its arithmetic is the same as an in-process run's."""
    import torch
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), **extra}


def paused_command(tmp_path, script, argv):
    """(command, marker): script run as its own process, pausing for good once it has written
    its runs' resume files for the first time (after epoch 1) and then touched marker, so that
    a test can kill or interrupt it at a known point, whatever the machine's speed."""
    marker = tmp_path / f"paused-{script}"
    wrapper = tmp_path / f"pause_{script}.py"
    wrapper.write_text(f"""import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
import sweep  # first, as the scripts load torch (sweep.py: no garbage collection meanwhile)
import train
real = train.save_resume_files
def save_resume_files(*args, **kwargs):
    real(*args, **kwargs)
    if os.environ.get("MUTANTS_COVERAGE"):  # tests/mutants.py's coverage map: keep what ran before the kill
        import coverage
        coverage.Coverage.current() and coverage.Coverage.current().save()
    open({str(marker)!r}, "w").close()
    while True:
        time.sleep(1)  # the test kills or interrupts this process here
train.save_resume_files = save_resume_files
import {script}
sys.exit({script}.main(sys.argv[1:]))
""")
    return [sys.executable, str(wrapper), *argv], marker


def wait_for(path, proc, seconds=HANG):
    """Wait until path exists; fail if proc ends first or time runs out."""
    import time
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# Writers for the real formats

def write_idx(path, array):
    """Write a uint8 array as an IDX file (magic 0x00000803-style header), gzipped if path ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    with opener(str(path), "wb") as f:
        f.write(header + array.tobytes())
    return str(path)


def make_images(n, shape, num_classes=10, seed=0):
    """uint8 images whose content depends on the label (a bright block per class) plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
    h = shape[0]
    for i, y in enumerate(labels):
        row = (y * h) // num_classes
        images[i, row:row + max(1, h // num_classes)] = 230
    return images, labels.astype(np.uint8)


def write_mnist_like(folder, n_train=1000, n_test=40, gz=True, seed=0):
    """The four IDX files of MNIST / Fashion-MNIST, 28x28, in folder. Returns the arrays."""
    suffix = ".gz" if gz else ""
    tx, ty = make_images(n_train, (28, 28), seed=seed)
    sx, sy = make_images(n_test, (28, 28), seed=seed + 1)
    for stem, arr in zip(IDX_STEMS, (tx, ty, sx, sy)):
        write_idx(os.path.join(str(folder), stem + suffix), arr)
    return tx, ty, sx, sy


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_cifar(data_dir, name="cifar10", per_batch=40, n_test=40, seed=0):
    """Tiny CIFAR-10 (five data_batch_i + test_batch) or CIFAR-100 (train + test) pickles.

    Returns what data.cifar_files(name) must return for these files:
    (folder, [(file, md5)] train, [(file, md5)] test)."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, train_files, test_files, key, classes = (
            "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10)
    else:
        folder, train_files, test_files, key, classes = ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100)
        per_batch = per_batch * 5
    root = Path(data_dir) / folder
    root.mkdir(parents=True, exist_ok=True)

    def write(fname, n):
        labels = [int(v) for v in rng.integers(0, classes, n)]
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: labels,
                 b"batch_label": fname.encode()}
        with open(root / fname, "wb") as f:
            pickle.dump(batch, f)
        return fname, md5(root / fname)

    train_list = [write(f, per_batch) for f in train_files]
    test_list = [write(f, n_test) for f in test_files]
    # the class names, as the real archive holds them
    meta, meta_key = ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    names = CIFAR10_CLASSES if name == "cifar10" else [f"class{i}" for i in range(100)]
    with open(root / meta, "wb") as f:
        pickle.dump({meta_key: [n.encode() for n in names]}, f)
    return folder, train_list, test_list


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_image_folder(data_dir, classes=("cat", "dog", "frog"), n_train=12, n_test=4, test_name="test", seed=0):
    """data_dir/train/<class>/*.png and data_dir/<test_name>/<class>/*.png, of assorted sizes."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    sizes = [(20, 30), (32, 32), (45, 17)]
    for split, n in (("train", n_train), (test_name, n_test)):
        for c, cls in enumerate(classes):
            d = Path(data_dir) / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                arr[:, :, c % 3] = 255
                Image.fromarray(arr).save(d / f"img{i}.png")
    return Path(data_dir)


# ---------------------------------------------------------------------------
# Running scripts

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def one_batch(argv):
    """argv (tiny_argv's) with 16 training images: epochs of one batch of 16, where what a test
    checks does not depend on how many batches an epoch has (a tiny run's cost is mostly per
    epoch: each batch more adds about 0.12 s of CPU, each epoch about 0.5 s)."""
    argv = list(argv)
    argv[argv.index("--train-size") + 1] = "16"
    return argv


def tiny_argv(data_dir, out, dataset="mnist", epochs=1, extra=()):
    """Tiny runs on CPU in fp32; a resume checkpoint after every epoch, however short."""
    return ["--dataset", dataset, "--data-dir", str(data_dir), "--image-size", "67",
            "--train-size", "32", "--val-size", "16", "--test-size", "16", "--batch-size", "16",
            "--epochs", str(epochs), "--precision", "fp32", "--device", "cpu", "--checkpoint-seconds", "0",
            "--out", str(out), *extra]


def run_config(**changes):
    """A run's config for tiny in-process training: MNIST at 67 px on CPU in fp32, a resume
    checkpoint after every epoch."""
    import train
    return {**train.DEFAULTS, "dataset": "mnist", "image_size": 67, "batch_size": 16, "epochs": 2,
            "train_size": 32, "val_size": 16, "test_size": 16, "device": "cpu", "precision": "fp32",
            "checkpoint_seconds": 0, **changes}


def tiny_split_of(data_dir, regime, train_size, val_size, test_size):
    """(dataset, train.Split) of the tiny MNIST in data_dir, batches of 16 at 67 px on CPU."""
    import torch
    import data
    import train
    ds = data.load_dataset("mnist", str(data_dir), 67, download=False)
    train_idx, val_idx = data.split_indices(len(ds.train_labels), regime, train_size, val_size)
    return ds, train.Split(ds, train_idx, val_idx, test_size, 16, 67, torch.device("cpu"))


def run_script(module_name, argv):
    """Run main_<module>.main(argv) in-process; returns (exit code, stdout, stderr)."""
    import importlib
    module = importlib.import_module(module_name)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def load_results(out, experiment):
    with open(os.path.join(str(out), "results", f"{experiment}.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A tiny MNIST in <dir>/MNIST/raw: 1000 training and 40 test 28x28 images, gzipped IDX."""
    d = tmp_path_factory.mktemp("mnist")
    write_mnist_like(d / "MNIST" / "raw")
    return d


@pytest.fixture
def cifar10_dir(tmp_path, monkeypatch):
    """A tiny CIFAR-10 (5 x 40 training, 40 test images) with data.cifar_files patched to its md5s."""
    import data
    d = tmp_path / "cifar"
    listing = write_cifar(d, "cifar10")
    real = data.cifar_files
    monkeypatch.setattr(data, "cifar_files", lambda name: listing if name == "cifar10" else real(name))
    return d


@pytest.fixture
def image_folder_dir(tmp_path):
    return write_image_folder(tmp_path / "imgs")


@pytest.fixture(scope="session")
def lr_sweep(mnist_dir, tmp_path_factory):
    """One shared end-to-end run of main_learning_rate.py: two values, two epochs."""
    out = tmp_path_factory.mktemp("lr_out")
    code, stdout, stderr = run_script("main_learning_rate",
                                      ["--values", "1e-4", "1e-3", *tiny_argv(mnist_dir, out, epochs=2)])
    return dict(out=out, code=code, stdout=stdout, stderr=stderr)


def fabricated(table, key):
    """A stand-in for train.train_run with known numbers: (best_val_acc, test_acc) =
    table[(config[key], seed)]; the configs it was called with are in .calls."""
    calls = []

    import torch

    def train_run(config, split, num_classes, resume_path=None, desc="run"):
        calls.append(dict(config))
        val, test = table[(config[key], config["seed"])]
        return {"status": "completed",
                "history": {"loss": [2.0 - val], "train_acc": [val], "val_acc": [val]},
                "test_acc": test, "best_val_acc": val, "epochs_completed": 1, "train_seconds": 0.01,
                "model": {"weight": torch.full((2, 2), val)}}

    train_run.calls = calls
    return train_run


def as_group(train_run):
    """A train.train_group stand-in (what the sweep calls) made of a train_run-style
    function, called once per run of the group."""
    def train_group(configs, split, num_classes, resume_paths=None, descs=None, on_finish=None):
        resume_paths = resume_paths or [None] * len(configs)
        descs = descs or ["run"] * len(configs)
        return [train_run(c, split, num_classes, r, d) for c, r, d in zip(configs, resume_paths, descs)]

    train_group.calls = getattr(train_run, "calls", None)
    return train_group


def real_train_run():
    """train.train_run bound to the real train_group, for stand-ins that call through
    while train.train_group is replaced."""
    import train
    group = train.train_group
    return lambda config, split, num_classes, resume_path=None, desc="run": \
        group([config], split, num_classes, [resume_path], [desc])[0]


def interrupt_second_epoch(monkeypatch):
    """Make the second validation pass raise KeyboardInterrupt, after epoch 1's checkpoint."""
    import train
    real = train.evaluate
    calls = []

    def evaluate(model, loader, precision):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, loader, precision)

    monkeypatch.setattr(train, "evaluate", evaluate)


def whole_and_cut_lr_run(data_dir, tmp_path, monkeypatch):
    """A 2-epoch learning-rate run (lr 1e-4, one batch an epoch) done whole into tmp_path/whole,
    and the same run cut by Ctrl-C after epoch 1 into tmp_path/cut. Returns (argv for an --out,
    the whole run's results entry, the cut run's --out, its resume file)."""
    argv = lambda out: one_batch(["--values", "1e-4", *tiny_argv(data_dir, out, epochs=2)])
    code, _, err = run_script("main_learning_rate", argv(tmp_path / "whole"))
    assert code == 0, err
    reference = load_results(tmp_path / "whole", "learning_rate")["runs"][0]
    cut = tmp_path / "cut"
    with monkeypatch.context() as m:
        interrupt_second_epoch(m)
        code, _, err = run_script("main_learning_rate", argv(cut))
    assert code == 130 and "run the same command again to resume" in err and "Traceback" not in err
    return argv, reference, cut, cut / "models" / "learning_rate" / "lr_0.0001.resume.pt"
