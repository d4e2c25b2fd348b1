"""bench.py in both modes, tiny: it trains both loops and writes its figures."""
import json

import pytest

import bench
from core import fused


def test_step_mode_writes_both_rates(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = bench.main(["--image-size", "67", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--rounds", "2",
                       "--images", "64", "--device", "cpu", "--precision", "fp32", "--json", str(path)])
    assert code == 0
    result = json.loads(path.read_text())
    assert result["mode"] == "steps" and result["device"] == "cpu" and result["precision"] == "fp32"
    (ours,) = result["ours"]
    assert len(result["study_rounds"]) == len(ours["rounds"]) == 2 and ours["fuse"] == 1
    assert result["study_images_per_s"] > 0 and ours["images_per_s"] > 0
    assert ours["ratio"] == ours["images_per_s"] / result["study_images_per_s"]  # stored unrounded
    assert ours["tflops"] == pytest.approx(ours["images_per_s"] * result["training_gflop_per_image"] / 1000, rel=1e-12)
    assert "median: study's way" in capsys.readouterr().out


def test_step_mode_times_each_fused_size(tmp_path):
    """Named kernels: choosing them by timing (--kernels auto, bench's default) would time every
    layer in both forms first: the same Group.choose_kernels that tests/test_fusion.py runs with
    auto for real."""
    path = tmp_path / "bench.json"
    code = bench.main(["--image-size", "67", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--rounds", "1",
                       "--images", "32", "--device", "cpu", "--precision", "fp32", "--fuse", "1", "3",
                       "--kernels", "split", "--json", str(path)])
    assert code == 0
    rows = json.loads(path.read_text())["ours"]
    assert [row["fuse"] for row in rows] == [1, 3]
    assert rows[1]["kernels"]["how"] == "--kernels split"
    assert rows[1]["kernels"]["kernels"] == {layer: "split" for layer in fused.LAYERS}


def test_training_flops_match_the_study():
    # STUDY.md: about 1.13 GMACs forward per 227 px image, so about 6.8 GFLOP per training image
    assert bench.training_flops(227) / 6 / 1e9 == pytest.approx(1.13, abs=0.01)


def test_job_mode_times_a_whole_run_both_ways(mnist_dir, tmp_path):
    path = tmp_path / "job.json"
    code = bench.main(["--job", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "67",
                       "--batch-size", "16", "--epochs", "1", "--train-size", "32", "--val-size", "16",
                       "--test-size", "16", "--device", "cpu", "--precision", "fp32", "--json", str(path)])
    assert code == 0
    result = json.loads(path.read_text())
    assert result["mode"] == "job" and (result["train_images"], result["val_images"], result["test_images"]) == \
        (32, 16, 16)
    assert result["study_seconds"] > 0 and result["ours_seconds"] > 0
    assert 0 <= result["study_test_acc"] <= 1 and 0 <= result["ours_test_acc"] <= 1


def test_missing_data_is_one_sentence(tmp_path, capsys):
    code = bench.main(["--job", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--device", "cpu",
                       "--json", str(tmp_path / "j.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "mnist" in err
    assert not (tmp_path / "j.json").exists()


def test_the_out_of_memory_k_is_said_to_be_beside_the_smaller_groups(tmp_path, capsys, monkeypatch):
    """bench holds every smaller K's group for its alternating rounds, so the first K out of
    memory is the first that does not fit beside them: it says so (issue 29), in the output
    that gpu_check.json's reader sees, instead of implying that K does not fit alone."""
    real = bench.Group

    def group(configs, *args, **kwargs):
        if len(configs) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(configs, *args, **kwargs)
    monkeypatch.setattr(bench, "Group", group)
    path = tmp_path / "bench.json"
    code = bench.main(["--image-size", "67", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--rounds", "1",
                       "--images", "16", "--device", "cpu", "--precision", "fp32", "--fuse", "1", "2",
                       "--kernels", "grouped", "--json", str(path)])
    assert code == 0
    assert json.loads(path.read_text())["out_of_memory_at_fuse"] == 2
    assert "fuse 2: out of memory beside the groups of smaller K" in capsys.readouterr().out


def test_the_summary_states_each_fused_k_against_one_run(capsys):
    """The step mode's last line: each K's images/s over K = 1's, which docs/speed.md quotes."""
    rows = [{"fuse": k, "images_per_s": rate, "ratio": rate / 50.0, "tflops": 1.0, "peak_share": None,
             "kernels": {}} for k, rate in ((1, 100.0), (2, 190.0), (4, 300.0))]
    bench.print_steps_summary({"study_images_per_s": 50.0, "ours": rows})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "median: study's way 50.0 images/s"
    assert lines[1] == "ours, 1 run(s) fused: 100.0 images/s, 2.00x, 1.00 TFLOPS"
    assert lines[-1] == "fused vs one run: K = 2 1.90x, K = 4 3.00x"
