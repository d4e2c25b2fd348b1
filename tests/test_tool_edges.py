"""Issue 28's tool edges: each tool refuses bad input in one sentence before any work, says
what is true where a user would be misled, and skips or names the files it did not write."""
import json
import os
import pickle

import numpy as np
import pytest

import data
from conftest import md5, run_script, tiny_argv, write_cifar, write_idx, write_mnist_like


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
