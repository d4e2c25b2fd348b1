"""evaluate.py: a saved run evaluated again gives its recorded test accuracy, with
per-class results under the dataset's class names, a confusion matrix, pictures,
predictions for image files, and one sentence for bad input; the best validation
epoch's weights are kept beside the last epoch's."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch

import evaluate
from conftest import load_results, one_batch, run_script, tiny_argv, write_mnist_like

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny fashion-mnist run of 2 epochs of 2 batches (32 images), from files in the real IDX
    format; 60 test images, the last batch of them partial. (On the CPU this was written on, its
    6 validation images score the same at both epochs, so that the best epoch, the first, comes
    before the last, at another test accuracy; the tests hold either way.)"""
    root = tmp_path_factory.mktemp("eval")
    write_mnist_like(root / "fmnist", n_train=300, n_test=60, seed=3)
    out = root / "out"
    code, stdout, err = run_script("main_activation", ["--values", "relu", *tiny_argv(
        root / "fmnist", out, dataset="fashion-mnist", epochs=2, extra=["--test-size", "60", "--train-size", "32"])])
    assert code == 0, err
    (run,) = load_results(out, "activation")["runs"]
    return dict(out=out, data=root / "fmnist", run=run, ckpt=out / "models" / "activation" / "relu.pt")


@pytest.fixture(scope="module")
def evaluated(trained):
    """evaluate.py run once on the trained run's last checkpoint: (exit code, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = evaluate.main([str(trained["ckpt"]), "--out", str(trained["out"])])
    return code, printed.getvalue()


def test_evaluate_reproduces_the_recorded_accuracy_with_class_names(trained, evaluated):
    code, printed = evaluated
    assert code == 0
    result = json.loads((trained["out"] / "results" / "activation_relu_eval.json").read_text())
    assert result["test_acc"] == trained["run"]["test_acc"]
    assert result["classes"] == FASHION and list(result["per_class"]) == FASHION
    assert trained["run"]["classes"] == FASHION  # the run's record names them too
    confusion = np.array(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == result["test_images"] == 60
    assert np.trace(confusion) / 60 == pytest.approx(result["test_acc"])
    for i, name in enumerate(FASHION):
        if confusion[i].sum():
            assert result["per_class"][name] == pytest.approx(confusion[i, i] / confusion[i].sum())
    for kind in ("confusion", "filters", "mistakes"):
        assert (trained["out"] / "images" / f"activation_relu_{kind}.png").stat().st_size > 1000
    assert f"{100 * trained['run']['test_acc']:.2f}%" in printed and "Ankle boot" in printed


def test_images_are_predicted_with_top5_class_names(trained, tmp_path, capsys):
    from PIL import Image
    import data
    ds = data.load_dataset("fashion-mnist", str(trained["data"]))
    png = tmp_path / "item.png"
    Image.fromarray(ds.test_images[7, 0].numpy()).save(png)  # a known test image, grey, 28 x 28
    answers = evaluate.predict_images(str(trained["ckpt"]), [str(png)], "cpu", "fp32")
    ((file, top),) = answers
    assert len(top) == 5 and all(name in FASHION for name, _ in top)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    # the same answer as the model gives that image through the dataset's own path
    model, ckpt = evaluate.load_model(str(trained["ckpt"]))
    with torch.no_grad():
        logits = model(data.transform_batch(ds.test_images[7:8], 67))
    assert top[0][0] == FASHION[int(logits.argmax(1))]
    assert evaluate.main([str(trained["ckpt"]), "--images", str(png), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith(f"{png}: {top[0][0]} ")


def one_line_error(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def test_bad_input_is_one_sentence(trained, tmp_path, capsys, monkeypatch):
    import data
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    assert evaluate.main([str(text), "--out", str(tmp_path)]) == 1
    assert str(text) in one_line_error(capsys)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    assert evaluate.main([str(other), "--out", str(tmp_path)]) == 1
    assert "not a finished run's checkpoint" in one_line_error(capsys)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    assert evaluate.main([str(trained["ckpt"]), "--images", str(broken)]) == 1
    assert "broken.png is not an image" in one_line_error(capsys)
    assert evaluate.main([str(trained["ckpt"]), "--data-dir", str(tmp_path / "nowhere"),
                          "--out", str(tmp_path)]) == 1
    assert "dataset" in one_line_error(capsys)
    assert not (tmp_path / "results").exists() and not (tmp_path / "images").exists()


def test_the_best_validation_epoch_is_kept_beside_the_last(trained, capsys):
    run = trained["run"]
    val = run["history"]["val_acc"]
    assert run["best_epoch"] == val.index(max(val)) + 1 and run["best_val_acc"] == max(val)
    best = trained["out"] / "models" / "activation" / "relu.best.pt"
    ckpt = torch.load(best, weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == run["best_epoch"] and ckpt["test_acc"] == run["test_acc_at_best"]
    if run["best_epoch"] == len(val):
        assert run["test_acc_at_best"] == run["test_acc"]
    assert evaluate.main([str(best), "--out", str(trained["out"])]) == 0
    result = json.loads((trained["out"] / "results" / "activation_relu.best_eval.json").read_text())
    assert result["test_acc"] == run["test_acc_at_best"]


def test_consolidated_evaluate_before_and_after_training(mnist_dir, tmp_path):
    out = tmp_path / "out"
    argv = one_batch(tiny_argv(mnist_dir, out))  # what is evaluated does not depend on the batches trained
    code, _, err = run_script("main_consolidated", ["--evaluate", *argv])
    assert code == 1 and "not trained yet" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_script("main_consolidated", argv)
    assert code == 0, err
    code, stdout, err = run_script("main_consolidated", ["--evaluate", *argv])
    assert code == 0, err
    runs = {r["name"]: r for r in load_results(out, "consolidated")["runs"]}
    for name in ("baseline", "consolidated"):
        result = json.loads((out / "results" / f"consolidated_{name}_eval.json").read_text())
        assert result["test_acc"] == runs[name]["test_acc"]
        assert result["classes"][0] == "0 - zero"  # MNIST's own names
    import report
    assert report.main(["--out", str(out)]) == 0
    text = (out / "results" / "REPORT.md").read_text()
    assert "class by class" in text and "consolidated_baseline_confusion.png" in text and "| 0 - zero |" in text


def test_plotting_and_report_skip_evaluation_and_bench_files(trained, evaluated, capsys):
    import plotting
    import report
    assert (trained["out"] / "results" / "activation_relu_eval.json").exists()  # the evaluation's file
    (trained["out"] / "results" / "bench.json").write_text('{"mode": "steps"}')
    capsys.readouterr()
    assert plotting.main(["--out", str(trained["out"])]) == 0
    assert report.main(["--out", str(trained["out"])]) == 0
    assert "error" not in capsys.readouterr().err


def test_the_filter_picture_puts_each_filter_in_its_place():
    """conv1's filters drawn as one mosaic: filter i at row i // 16, column i % 16, as it is,
    with white gaps between filters."""
    import numpy as np
    import evaluate
    filters = np.random.default_rng(0).random((96, 11, 11, 3))
    mosaic = evaluate.filter_mosaic(filters)
    assert mosaic.shape == (6 * 13 - 2, 16 * 13 - 2, 3)
    for i in range(96):
        r, c = divmod(i, 16)
        assert np.array_equal(mosaic[r * 13:r * 13 + 11, c * 13:c * 13 + 11], filters[i]), i
    assert (mosaic[11:13] == 1).all() and (mosaic[:, 11:13] == 1).all()
    assert (mosaic == 1).sum() == 3 * (mosaic.shape[0] * mosaic.shape[1] - 96 * 121)
