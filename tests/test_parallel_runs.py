"""Several processes on one --out: terminals side by side, torchrun ranks spreading a
sweep's runs, --shard I/N for job arrays. No process loses another's runs, no run is
trained twice at once, and a rerun trains only what is missing."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from core import results

from conftest import HANG, ROOT, TORCHRUN, load_results, run_script, tiny_argv, wait_for

VALUES = ["1e-4", "3e-4", "1e-3", "3e-3"]
NAMES = {"lr_0.0001", "lr_0.0003", "lr_0.001", "lr_0.003"}
LOSS_RTOL = 1e-4


def command(data_dir, out, values, extra=()):
    return [sys.executable, "main_learning_rate.py", "--values", *values, *tiny_argv(data_dir, out), *extra]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def by_name(out):
    return {r["name"]: r for r in load_results(out, "learning_rate")["runs"]}


@pytest.mark.slow
def test_two_processes_on_one_out_keep_all_their_runs(mnist_dir, tmp_path):
    """One sweep as a process of its own, the other in this process, on the same --out at once:
    the second starts once the first has written its plan (begun its sweep), so that both train
    and record their runs side by side."""
    out = tmp_path / "out"
    with open(tmp_path / "p0.log", "w") as log:
        proc = subprocess.Popen(command(mnist_dir, out, VALUES[:2]), cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env=env())
    try:
        wait_for(out / "results" / ".learning_rate.planned.json", proc, seconds=300)
        code, stdout, err = run_script("main_learning_rate", ["--values", *VALUES[2:], *tiny_argv(mnist_dir, out)])
    finally:
        child = proc.wait(timeout=HANG)
    assert [child, code] == [0, 0], [(tmp_path / "p0.log").read_text(), stdout + err]
    runs = by_name(out)
    assert set(runs) == NAMES and all(r["status"] == "completed" for r in runs.values())
    csv_names = {line.split(",")[0] for line in (out / "results" / "learning_rate.csv").read_text().splitlines()[1:]}
    assert csv_names == NAMES
    assert {p.name for p in (out / "models" / "learning_rate").iterdir()} == {f"{n}{end}" for n in NAMES for end in (".pt", ".best.pt")}
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_run_claimed_by_another_process_is_left_to_it(mnist_dir, tmp_path):
    from core import storage
    out = tmp_path / "out"
    claim = storage.Claim(str(out / "models" / "learning_rate" / ".lr_0.0001.lock"))
    assert claim.acquire()
    try:
        code, stdout, err = run_script("main_learning_rate", ["--values", "1e-4", "1e-3",
                                                               *tiny_argv(mnist_dir, out)])
    finally:
        claim.release()
    assert code == 0, err
    assert "lr_0.0001: being trained by another process" in stdout
    assert set(by_name(out)) == {"lr_0.001"}
    assert "1 run(s) of this sweep are not recorded yet" in stdout
    # once it is free, the same command trains only the missing run
    code, stdout, err = run_script("main_learning_rate", ["--values", "1e-4", "1e-3", *tiny_argv(mnist_dir, out)])
    assert code == 0 and "lr_0.001: already completed" in stdout and "lr_0.0001 epoch 1/1" in stdout


@pytest.fixture(scope="module")
def sharded(mnist_dir, tmp_path_factory):
    """The four-run sweep as --shard 1/2 and then --shard 2/2, in this process, on one --out:
    each step's exit code, output and the runs recorded after it. Every run is trained alone in
    one process (--fuse auto: one run at a time for so small a sweep), so the shards' runs are
    also the one-process reference of the torchrun test below."""
    out = tmp_path_factory.mktemp("sharded")
    steps = []
    for shard in ("1/2", "2/2"):
        code, stdout, err = run_script("main_learning_rate", ["--values", *VALUES, *tiny_argv(mnist_dir, out),
                                                              "--shard", shard])
        steps.append(dict(code=code, stdout=stdout, err=err, runs=by_name(out) if code == 0 else None))
    yield steps
    shutil.rmtree(out / "models", ignore_errors=True)  # ~0.7 GB of checkpoints on the RAM disk


def test_shards_one_after_another_make_the_whole_sweep(sharded):
    first_step, second_step = sharded
    assert first_step["code"] == 0, first_step["err"]
    first = first_step["runs"]
    assert set(first) == {"lr_0.0001", "lr_0.001"}  # every second run, from the first
    assert all(r["trained_on"]["shard"] == "1/2" for r in first.values())
    assert second_step["code"] == 0, second_step["err"]
    runs = second_step["runs"]
    assert set(runs) == NAMES
    assert {runs[n]["trained_on"]["shard"] for n in ("lr_0.0003", "lr_0.003")} == {"2/2"}
    assert runs["lr_0.0001"] == first["lr_0.0001"]  # shard 2 left shard 1's runs alone


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_is_refused(tmp_path, text):
    code, out, err = run_script("main_learning_rate", ["--values", "1e-4", *tiny_argv(tmp_path, tmp_path / "o"),
                                                       "--shard", text])
    assert code == 2 and "--shard" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_spreads_the_runs_two_per_rank_and_each_rank_fuses_its_share(mnist_dir, tmp_path, sharded):
    """The four-run sweep in one process (the shards above: each run trained alone), then under
    torchrun with 2 gloo processes and --fuse 2: each rank takes two runs and trains them as one
    group, and every run ends as it does in one process (split kernels: the same arithmetic at any K)."""
    multi = tmp_path / "multi"
    assert [step["code"] for step in sharded] == [0, 0], [step["err"] for step in sharded]
    proc = subprocess.run([*TORCHRUN, *command(mnist_dir, multi, VALUES, ["--fuse", "2", "--kernels", "split"])[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG, env=env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "runs spread over them" in proc.stdout
    one, two = sharded[-1]["runs"], by_name(multi)
    assert set(one) == set(two) == NAMES
    ranks = sorted(r["trained_on"]["rank"] for r in two.values())
    assert ranks == [0, 0, 1, 1]
    for name in NAMES:
        assert two[name]["status"] == "completed" and two[name]["world_size"] == 1
        assert one[name]["fused_with"] == []  # the reference trained each run alone
        assert results.same_config(two[name]["config"], one[name]["config"])  # --kernels aside
        (partner,) = two[name]["fused_with"]  # each rank trained its two runs as one group
        assert two[partner.split(" seed ")[0]]["trained_on"]["rank"] == two[name]["trained_on"]["rank"]
        assert torch.allclose(torch.tensor(two[name]["history"]["loss"], dtype=torch.float64),
                              torch.tensor(one[name]["history"]["loss"], dtype=torch.float64), rtol=LOSS_RTOL)
        assert two[name]["test_acc"] == pytest.approx(one[name]["test_acc"], abs=1e-9)
    assert proc.stdout.count("best by mean validation accuracy") == 1  # one rank writes the table


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_a_rank_killed_mid_sweep_loses_nothing_and_the_rerun_trains_only_what_is_missing(mnist_dir, tmp_path):
    wrapper = tmp_path / "die_on_rank1.py"
    wrapper.write_text(f'''import os, sys
sys.path.insert(0, {str(ROOT)!r})
import sweep  # first, as the scripts load torch (sweep.py: no garbage collection meanwhile)
import train
real, calls = train.train_group, []
def train_group(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        os._exit(9)  # killed in its second run, as by the OOM killer
    return real(*args, **kwargs)
train.train_group = train_group
import main_learning_rate
sys.exit(main_learning_rate.main(sys.argv[1:]))
''')
    out = tmp_path / "out"
    argv = command(mnist_dir, out, VALUES)[2:]
    proc = subprocess.run([*TORCHRUN, str(wrapper), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG, env=env())
    assert proc.returncode != 0
    records = out / "results" / "learning_rate"
    before = {p.name: p.read_text() for p in records.iterdir()}
    rank1_first = [json.loads(t) for t in before.values() if json.loads(t)["trained_on"]["rank"] == 1]
    assert len(rank1_first) == 1  # rank 1 recorded its first run before it died

    proc = subprocess.run([*TORCHRUN, *command(mnist_dir, out, VALUES)[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=HANG, env=env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = by_name(out)
    assert set(runs) == NAMES and all(r["status"] == "completed" for r in runs.values())
    for fname, text in before.items():  # what was recorded was not trained again
        assert (records / fname).read_text() == text
    assert proc.stdout.count("already completed") == len(before)
