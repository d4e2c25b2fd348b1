"""--tensorboard (issue 31, docs/tensorboard.md): one TensorBoard run per (setting, seed) under
<out>/runs/<experiment>/<run>_seed<k>/, read back with TensorBoard's own EventAccumulator and
over a real `tensorboard` server's HTTP API: its scalars are its record's history epoch by epoch,
its hparams its config and results; fused members each write their own run; a run killed and
resumed holds each epoch once; plotting.py --tensorboard writes the same runs from results files,
as often as it is run; without the package the flag stops in one sentence before data loads, and
training without the flag never imports it."""
import _socket
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import HANG, ROOT, child_env, load_results, one_batch, run_script, skip_fsync, tiny_argv, wait_for

pytestmark = pytest.mark.slow  # whole tiny sweeps

EXPERIMENT = "dropout"
CONFIG_HPARAMS = ("optimizer", "lr", "l1", "l2", "activation", "dropout", "seed", "batch_size", "image_size",
                  "regime", "precision", "dataset", "epochs")
DECLARED = {*CONFIG_HPARAMS, "experiment", "setting", "status", "chosen_lr"}
METRICS = {"hparams/best_val_acc": "best_val_acc", "hparams/test_acc": "test_acc",
           "hparams/test_acc_at_best": "test_acc_at_best"}


def sweep_argv(data_dir, out, epochs=2, extra=()):
    """Two dropout settings fused as one group of 2 (split kernels), one batch an epoch."""
    return one_batch(["--values", "0", "0.3", *tiny_argv(data_dir, out, epochs=epochs), "--fuse", "2",
                      "--kernels", "split", *extra])


@pytest.fixture(scope="module")
def sweep_and_live(mnist_dir, tmp_path_factory):
    """(--out, {run folder name: its scalars as written live}) of one tiny --tensorboard sweep of two
    fused runs (2 epochs); the live scalars are read as each run finishes, before its record
    rewrites its folder."""
    pytest.importorskip("tensorboard")
    from core import tensorboard
    out, live = tmp_path_factory.mktemp("tb") / "out", {}
    real = tensorboard.Board.finished

    def finished(self, job, record):
        folder = tensorboard.run_dir(self.out, self.experiment, job.name, job.config["seed"])
        live[os.path.basename(folder)] = read_run_scalars(folder)
        real(self, job, record)

    with pytest.MonkeyPatch.context() as m:
        skip_fsync(m)
        m.setattr(tensorboard.Board, "finished", finished)
        code, _, err = run_script("main_dropout", sweep_argv(mnist_dir, out, extra=["--tensorboard"]))
    assert code == 0, err
    return out, live


@pytest.fixture
def swept(sweep_and_live):
    return sweep_and_live[0]


def read_run(folder) -> tuple:
    """(scalars {tag: [(step, value)]}, hparams {name: value}, declared hparam names, declared
    metric tags) of a run folder, read by TensorBoard's EventAccumulator. Events are kept as
    written (purge_orphaned_data off), so that an epoch written twice shows twice."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import metadata
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0}, purge_orphaned_data=False)
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    return (scalars, hparams, {h.name for h in experiment.hparam_infos},
            {m.name.tag for m in experiment.metric_infos})


def expected_scalars(record) -> dict:
    """What a run's folder must hold, from its record: accuracies in percent, the epoch the step."""
    h, n, lr = record["history"], len(record["history"]["loss"]), record["config"]["lr"]
    epochs = range(1, n + 1)
    rates = record["timing"]["images_per_s"]
    expected = {"loss/train": list(zip(epochs, h["loss"])),
                "accuracy/train": [(e, 100 * v) for e, v in zip(epochs, h["train_acc"])],
                "accuracy/val": [(e, 100 * v) for e, v in zip(epochs, h["val_acc"])],
                "lr": [(e, lr) for e in epochs],
                "images_per_s": [(e, v) for e, v in zip(epochs, rates) if v is not None],
                "accuracy/test": [(n, 100 * record["test_acc"])]}
    expected.update({tag: [(n, 100 * record[key])] for tag, key in METRICS.items()})
    return expected


def assert_scalars_equal(scalars, expected):
    assert scalars.keys() == expected.keys()
    for tag, points in expected.items():  # float32 in the event file
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def expected_hparams(record, experiment=EXPERIMENT) -> dict:
    config = record["config"]
    setting = record["tune"]["setting"] if record.get("tune") else record["name"]
    return {**{key: config[key] for key in CONFIG_HPARAMS}, "experiment": experiment, "setting": setting,
            "status": record["status"]}


def open_writers() -> list:
    """The SummaryWriters still open in this process: each holds a writer thread while open."""
    import threading
    return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"]


def runs_dir(out, experiment=EXPERIMENT):
    return out / "runs" / experiment


def test_each_fused_member_is_its_own_run_equal_to_its_record(sweep_and_live):
    swept, live = sweep_and_live
    runs = {r["name"]: r for r in load_results(swept, EXPERIMENT)["runs"]}
    assert all(run["fused_with"] for run in runs.values())  # trained as one fused group of 2
    folders = sorted(os.listdir(runs_dir(swept)))
    records = sorted(f[:-len(".json")] for f in os.listdir(swept / "results" / EXPERIMENT) if f.endswith(".json"))
    assert folders == records == ["p0.3_seed0", "p0_seed0"]  # the records' names, one run each
    for name, record in runs.items():
        folder = runs_dir(swept) / f"{name}_seed0"
        assert len(os.listdir(folder)) == 1  # one event file: no timestamped subfolder of add_hparams
        scalars, hparams, declared, metrics = read_run(folder)
        assert_scalars_equal(scalars, expected_scalars(record))
        assert len(scalars["loss/train"]) == 2 and None not in record["timing"]["images_per_s"]
        assert hparams == expected_hparams(record)
        assert declared == DECLARED and metrics == set(METRICS)
        # as each member trained: its own epochs in its own folder
        every_epoch = {k: v for k, v in expected_scalars(record).items()
                       if not k.startswith(("hparams/", "accuracy/test"))}
        assert_scalars_equal(live[f"{name}_seed0"], every_epoch)


def test_a_tuned_sweep_shows_each_setting_s_chosen_rate(mnist_dir, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "out"
    argv = one_batch(["--values", "0", *tiny_argv(mnist_dir, out), "--tune-lr", "x1", "x10", "--tensorboard"])
    code, _, err = run_script("main_dropout", argv)
    assert code == 0, err
    results = load_results(out, EXPERIMENT)
    chosen = results["tuning"]["p0"]["chosen_lr"]
    assert len(results["runs"]) == 2
    for record in results["runs"]:
        _, hparams, _, _ = read_run(runs_dir(out) / f"{record['name']}_seed0")
        assert hparams == {**expected_hparams(record), "chosen_lr": chosen}
    assert open_writers() == []  # every live writer closed at the sweep's end


def pause_command(tmp_path, tag, step, argv):
    """(command, marker): main_dropout as its own process, pausing for good once the live writer
    has written (and flushed) tag at step and touched marker, so that the test kills it there."""
    marker = tmp_path / "paused"
    wrapper = tmp_path / "pause_in_tensorboard.py"
    wrapper.write_text(f"""import sys, time
sys.path.insert(0, {str(ROOT)!r})
import sweep  # first, as the scripts load torch
from core import tensorboard
real = tensorboard._scalar
def _scalar(writer, name, value, at):
    real(writer, name, value, at)
    if (name, at) == ({tag!r}, {step}):
        writer.flush()
        open({str(marker)!r}, "w").close()
        while True:
            time.sleep(1)  # the test kills this process here
tensorboard._scalar = _scalar
import main_dropout
sys.exit(main_dropout.main(sys.argv[1:]))
""")
    return [sys.executable, str(wrapper), *argv], marker


# between epochs (epoch 2 written, epoch 3 training), and inside the write of epoch 3: either way
# the resume file holds 2 epochs (--checkpoint-every 2) and the folder held more or as many
@pytest.mark.parametrize("tag, step", [("images_per_s", 2), ("accuracy/train", 3)])
def test_a_run_killed_and_resumed_shows_each_epoch_once(mnist_dir, tmp_path, monkeypatch, tag, step):
    pytest.importorskip("tensorboard")
    from core import tensorboard
    out = tmp_path / "out"
    argv = one_batch(["--values", "0.3", *tiny_argv(mnist_dir, out, epochs=3), "--checkpoint-every", "2",
                      "--tensorboard"])
    command, paused = pause_command(tmp_path, tag, step, argv)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        wait_for(paused, proc)
        os.kill(proc.pid, 9)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    folder = runs_dir(out) / "p0.3_seed0"
    assert read_run_scalars(folder)["accuracy/train"][-1][0] == step  # the killed run wrote that far
    live = {}
    real = tensorboard.Board.finished

    def finished(self, job, record):  # the live folder as the resumed run left it, before its record rewrites it
        live.update(read_run_scalars(folder))
        real(self, job, record)

    monkeypatch.setattr(tensorboard.Board, "finished", finished)
    code, text, err = run_script("main_dropout", argv)
    assert code == 0, err
    assert "resuming from epoch 3 of 3" in text
    (record,) = load_results(out, EXPERIMENT)["runs"]
    every_epoch = {k: v for k, v in expected_scalars(record).items() if k in live}
    assert every_epoch.keys() == {"loss/train", "accuracy/train", "accuracy/val", "lr", "images_per_s"}
    assert_scalars_equal(live, every_epoch)  # each epoch once, as the record has it
    scalars, _, _, _ = read_run(folder)
    assert_scalars_equal(scalars, expected_scalars(record))


def read_run_scalars(folder) -> dict:
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0}, purge_orphaned_data=False)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_from_results_writes_the_same_runs_and_nothing_twice(swept, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    live = {name: read_run(runs_dir(out) / name) for name in os.listdir(runs_dir(out))}
    shutil.rmtree(out / "runs")
    for _ in range(2):  # a second time adds nothing
        code, printed, err = run_script("plotting", ["--tensorboard", "--out", str(out)])
        assert code == 0, err
        assert str(runs_dir(out) / "p0_seed0") in printed
        for name, (scalars, hparams, declared, metrics) in live.items():
            assert len(os.listdir(runs_dir(out) / name)) == 1
            again = read_run(runs_dir(out) / name)
            assert_scalars_equal(again[0], scalars)
            assert again[1:] == (hparams, declared, metrics)


def child(code: str, tmp_path):
    """Run python code in its own process from the repository root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}"],
                          cwd=ROOT, capture_output=True, text=True, env=child_env(), timeout=HANG)


def test_without_the_package_the_flag_stops_in_one_sentence_before_data_loads(mnist_dir, tmp_path):
    out, loaded = tmp_path / "out", tmp_path / "data-loaded"
    argv = sweep_argv(mnist_dir, out, extra=["--tensorboard"])
    proc = child(f"""import json
sys.modules["tensorboard"] = None  # as where the package is not installed
import data
def load_dataset(*args, **kwargs):
    open({str(loaded)!r}, "w").close()
    raise SystemExit(99)
data.load_dataset = load_dataset
import main_dropout, plotting
codes = []
for main, argv in ((main_dropout.main, {argv!r}), (plotting.main, ["--tensorboard", "--out", {str(out)!r}])):
    try:
        codes.append(main(argv))
    except SystemExit as err:
        codes.append(err.code)
print(json.dumps(codes))
""", tmp_path)
    assert json.loads(proc.stdout.splitlines()[-1]) == [2, 1], proc.stderr
    sentence = "the tensorboard package is not installed; install it with pip install tensorboard"
    assert proc.stderr.splitlines() == [f"main_dropout.py: error: argument --tensorboard: {sentence}",
                                        f"error: --tensorboard: {sentence}"]
    assert not loaded.exists() and not (out / "results").exists() and not (out / "runs").exists()


@pytest.mark.parametrize("extra", [[], ["--tune-lr", "x1", "x10"]])  # a tuned sweep's end writes tuned runs anew
def test_training_without_the_flag_never_imports_tensorboard(mnist_dir, tmp_path, extra):
    out = tmp_path / "out"
    proc = child(f"""import json
import main_dropout
code = main_dropout.main({one_batch(["--values", "0", *tiny_argv(mnist_dir, out), *extra])!r})
print(json.dumps([code, sorted(m for m in sys.modules if m.split(".")[0] == "tensorboard"
                                or m.startswith("torch.utils.tensorboard"))]))
""", tmp_path)
    assert json.loads(proc.stdout.splitlines()[-1]) == [0, []], proc.stderr
    assert (out / "results" / EXPERIMENT / "p0_seed0.json").exists() and not (out / "runs").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(opener, url, body=None):
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=60) as response:
        return json.loads(response.read())


def wait_for_runs(proc, opener, base, tags: dict) -> None:
    """Poll the server until it serves every run with every tag (it loads the folder in the
    background); fail if it ends first or only after HANG seconds, a guard against a hang."""
    deadline = time.monotonic() + HANG
    while True:
        assert proc.poll() is None, f"tensorboard ended (exit {proc.returncode})"
        try:
            served = get_json(opener, f"{base}/data/plugin/scalars/tags")
            if all(set(tags[run]) <= set(served.get(run, {})) for run in tags):
                return
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"tensorboard served no runs within {HANG} s"
        time.sleep(0.2)


def test_a_real_tensorboard_serves_the_runs_scalars_and_hparams(swept, tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _socket.socket.connect)  # 127.0.0.1 only, below
    records = {f"{EXPERIMENT}/{r['name']}_seed0": r for r in load_results(swept, EXPERIMENT)["runs"]}
    expected = {run: expected_scalars(record) for run, record in records.items()}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for 127.0.0.1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(swept / "runs"),
                             "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        wait_for_runs(proc, opener, base, expected)
        assert set(get_json(opener, f"{base}/data/runs")) == set(records)
        for run, tags in expected.items():
            served = {tag: [(step, value) for _, step, value in get_json(
                opener, f"{base}/data/plugin/scalars/scalars?" + urllib.parse.urlencode({"run": run, "tag": tag}))]
                for tag in tags}
            assert_scalars_equal(served, tags)
        experiment = get_json(opener, f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        assert {h["name"] for h in experiment["hparamInfos"]} == DECLARED
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == set(METRICS)
        groups = get_json(opener, f"{base}/data/plugin/hparams/session_groups",
                          {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
                           "colParams": [], "startIndex": 0, "sliceSize": 100})["sessionGroups"]
        assert {g["name"] for g in groups} == set(records)  # each run one row
        for group in groups:
            record = records[group["name"]]
            assert group["hparams"] == pytest.approx(expected_hparams(record))
            metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            assert metrics == pytest.approx({tag: 100 * record[key] for tag, key in METRICS.items()}, rel=1e-6)
    finally:
        proc.terminate()
        proc.wait(timeout=HANG)


def test_runs_finished_before_the_flag_are_written_when_a_sweep_with_it_starts(mnist_dir, tmp_path):
    """A sweep trained without --tensorboard, then the same command with it: nothing to train,
    yet each run it asks for shows, from its record; and no writer is left open afterwards."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "out"
    argv = one_batch(["--values", "0", "0.5", *tiny_argv(mnist_dir, out)])
    assert run_script("main_dropout", argv)[0] == 0
    assert not (out / "runs").exists()
    code, _, err = run_script("main_dropout", [*argv, "--tensorboard"])
    assert code == 0, err
    for record in load_results(out, EXPERIMENT)["runs"]:
        scalars, hparams, _, _ = read_run(runs_dir(out) / f"{record['name']}_seed0")
        assert [value for _, value in scalars["loss/train"]] == pytest.approx(record["history"]["loss"])
        assert hparams == expected_hparams(record)
    assert open_writers() == []
