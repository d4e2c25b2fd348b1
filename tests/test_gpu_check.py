"""gpu_check.py, the one command that measures every GPU figure the README states, run end
to end on the CPU at a tiny size (issue 16)."""
import json

import pytest

import fused
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
