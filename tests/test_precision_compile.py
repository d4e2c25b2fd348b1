"""Paths the README offers beyond the defaults: fp16 with a gradient scaler,
--compile, and a read-only data folder that must not be written to."""
import os

import pytest
import torch

import data
import train
from conftest import make_images, run_script, tiny_argv


def tiny_split(n_train=32, n_eval=16):
    """n_train training images in batches of 16, n_eval validation and n_eval test images."""
    imgs, labels = make_images(n_train + 32, (28, 28))
    images = torch.from_numpy(imgs).unsqueeze(1)
    targets = torch.from_numpy(labels.astype("int64"))
    ds = data.Dataset("tiny", images, targets, images[:16], targets[:16], list(range(10)), "memory")
    return train.Split(ds, torch.arange(n_train), torch.arange(n_train, n_train + n_eval), n_eval, 16, 67,
                       torch.device("cpu"))


def test_fp16_trains_with_a_gradient_scaler(monkeypatch):
    """One training, one validation and one test image: fp16 convolutions on a CPU are about 20x
    slower than fp32's (a run on 16 of each took 5.3 s, on these 0.5 s). One image's loss also
    lies further from fp32's than 16 images' mean: 21 float32 steps (5e-6) here against 1 step
    (2.4e-7), both far inside the 1e-2."""
    scalers = []
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: scalers.append(real(*a, **k)) or scalers[-1])
    config = {**train.DEFAULTS, "image_size": 67, "epochs": 1, "precision": "fp16"}
    torch.manual_seed(0)
    record = train.train_run(config, tiny_split(1, 1), 10)
    assert record["status"] == "completed"
    assert len(scalers) == 1 and scalers[0].is_enabled()
    fp32 = train.train_run({**config, "precision": "fp32"}, tiny_split(1, 1), 10)
    # the same run in half precision: close to fp32, not identical
    assert record["history"]["loss"][0] == pytest.approx(fp32["history"]["loss"][0], rel=1e-2)
    assert record["history"]["loss"][0] != fp32["history"]["loss"][0]


def test_compile_flag_trains_through_torch_compile(monkeypatch):
    """torch.compile with the eager backend: dynamo traces our model and step exactly as
    with inductor, without spending a minute generating C++ on 2 cores. One training batch of 16
    an epoch (32 images gave two of the same shape; validation and test are 16 each, as before),
    two epochs: the compiled model trains again after evaluating in eval mode."""
    calls = []
    real = torch.compile

    def eager_compile(model, **kwargs):
        calls.append(model)
        return real(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    config = {**train.DEFAULTS, "image_size": 67, "epochs": 2, "precision": "fp32"}
    torch.manual_seed(0)
    plain = train.train_run(config, tiny_split(16), 10)
    compiled = train.train_run({**config, "compile": True}, tiny_split(16), 10)
    assert len(calls) == 1
    assert compiled["history"]["loss"] == pytest.approx(plain["history"]["loss"], rel=1e-5)
    # the checkpoint holds the plain model's names, not torch.compile's "_orig_mod." ones
    assert set(compiled["model"]) == set(plain["model"])


def test_read_only_data_folder_is_never_written(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p).startswith(str(folder))
                        and mode == os.W_OK else real_access(p, mode, **k))
    fetched = []
    import torchvision
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", lambda self: fetched.append(self))
    code, _, err = run_script("main_learning_rate", tiny_argv(folder, tmp_path / "out", dataset="cifar10"))
    assert code == 1
    assert "read-only" in err and str(folder) in err and len(err.strip().splitlines()) == 1
    assert fetched == [] and os.listdir(folder) == []
    assert not (tmp_path / "out").exists()
