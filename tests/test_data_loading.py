"""data.py: reading MNIST / Fashion-MNIST IDX files, CIFAR pickles and image folders,
the errors for missing or corrupt data, and the study's split regimes."""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch

import data
from conftest import CIFAR10_CLASSES, md5, write_cifar, write_idx, write_image_folder, write_mnist_like


# ---------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

def test_read_idx_roundtrip_plain_and_gzipped(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        path = write_idx(tmp_path / name, arr)
        got = data.read_idx(path)
        assert got.shape == (5, 28, 28) and got.dtype == np.uint8
        assert np.array_equal(got, arr)
    labels = np.arange(7, dtype=np.uint8)
    assert np.array_equal(data.read_idx(write_idx(tmp_path / "l.gz", labels)), labels)


def test_read_idx_rejects_a_non_ubyte_file_and_a_short_payload(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 2]) + b"\0" * 8)  # float IDX
    with pytest.raises(ValueError):
        data.read_idx(str(bad_magic))
    path = write_idx(tmp_path / "x", np.zeros((4, 3), dtype=np.uint8))
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-2])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(path)


def test_load_mnist_from_torchvision_layout(mnist_dir):
    ds = data.load_dataset("mnist", str(mnist_dir), 67, download=False)
    assert ds.train_images.shape == (1000, 1, 28, 28) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (40, 1, 28, 28)
    assert ds.train_labels.dtype == torch.int64 and ds.train_labels.shape == (1000,)
    assert ds.num_classes == 10 and len(ds.classes) == 10
    assert ds.source == os.path.join(str(mnist_dir), "MNIST", "raw")
    expected = data.read_idx(os.path.join(ds.source, "train-images-idx3-ubyte.gz"))
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(expected.copy()))


def test_load_idx_directly_from_data_dir_uncompressed(tmp_path):
    tx, ty, sx, sy = write_mnist_like(tmp_path, n_train=30, n_test=10, gz=False)
    ds = data.load_dataset("mnist", str(tmp_path), 67, download=False)
    assert ds.source == str(tmp_path)
    assert torch.equal(ds.train_labels, torch.from_numpy(ty.astype(np.int64)))
    assert torch.equal(ds.test_images[:, 0], torch.from_numpy(sx))


def test_mnist_raw_folder_takes_precedence_over_data_dir(tmp_path):
    write_mnist_like(tmp_path, n_train=30, n_test=10)
    write_mnist_like(tmp_path / "MNIST" / "raw", n_train=20, n_test=10)
    ds = data.load_dataset("mnist", str(tmp_path), 67, download=False)
    assert len(ds.train_labels) == 20


def test_fashion_mnist_layout_and_classes(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    write_mnist_like(tmp_path / "FashionMNIST" / "raw", n_train=30, n_test=10)
    ds = data.load_dataset("fashion-mnist", str(tmp_path), 67, download=False)
    assert ds.name == "fashion-mnist"
    assert len(ds.train_labels) == 30
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10


def test_fashion_mnist_falls_back_to_the_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_like(debian, n_train=30, n_test=10)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(debian))
    empty = tmp_path / "empty"
    empty.mkdir()
    ds = data.load_dataset("fashion-mnist", str(empty), 67, download=False)
    assert ds.source == str(debian) and len(ds.train_labels) == 30


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_idx_files_raise_data_error_naming_the_folder(tmp_path, monkeypatch, name):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    missing = tmp_path / "missing"
    with pytest.raises(data.DataError) as exc:
        data.load_dataset(name, str(missing), 67, download=False)
    assert str(missing) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_idx_files_with_failing_download_raise_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr("torchvision.datasets.MNIST", offline)
    with pytest.raises(data.DataError, match="downloading it failed"):
        data.load_dataset("mnist", str(tmp_path / "missing"), 67, download=True)


def test_one_missing_idx_file_is_missing_data(tmp_path):
    write_mnist_like(tmp_path, n_train=30, n_test=10)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(data.DataError):
        data.load_dataset("mnist", str(tmp_path), 67, download=False)


def test_truncated_gzip_idx_raises_data_error(tmp_path):
    write_mnist_like(tmp_path, n_train=200, n_test=10)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DataError) as exc:
        data.load_dataset("mnist", str(tmp_path), 67, download=False)
    assert str(path) in str(exc.value) and "corrupt" in str(exc.value)


def test_idx_with_too_few_pixels_raises_data_error(tmp_path):
    write_mnist_like(tmp_path, n_train=30, n_test=10)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(data.DataError, match="truncated"):
        data.load_dataset("mnist", str(tmp_path), 67, download=False)


def test_image_and_label_counts_that_disagree_raise_data_error(tmp_path):
    write_mnist_like(tmp_path, n_train=30, n_test=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(data.DataError, match="disagree"):
        data.load_dataset("mnist", str(tmp_path), 67, download=False)


def test_unknown_dataset_name():
    with pytest.raises(data.DataError, match="unknown dataset"):
        data.load_dataset("imagenet", "/nonexistent", 67, download=False)


# ---------------------------------------------------------------------------
# CIFAR

def test_cifar_files_lists_torchvisions_names():
    folder, train, test = data.cifar_files("cifar10")
    assert folder == "cifar-10-batches-py"
    assert [f for f, _ in train] == [f"data_batch_{i}" for i in range(1, 6)]
    assert [f for f, _ in test] == ["test_batch"]
    assert all(len(m) == 32 for _, m in train + test)
    folder, train, test = data.cifar_files("cifar100")
    assert folder == "cifar-100-python" and [f for f, _ in train] == ["train"] and [f for f, _ in test] == ["test"]


def test_load_tiny_cifar10(cifar10_dir):
    ds = data.load_dataset("cifar10", str(cifar10_dir), 67, download=False)
    assert ds.train_images.shape == (200, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (40, 3, 32, 32)
    assert ds.num_classes == 10
    assert ds.source == os.path.join(str(cifar10_dir), "cifar-10-batches-py")
    with open(os.path.join(ds.source, "data_batch_2"), "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    # rows are CHW-flattened: the first 1024 bytes are the red plane
    expected = torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32))
    assert torch.equal(ds.train_images[40:80], expected)
    assert ds.train_labels[40:80].tolist() == batch[b"labels"]
    assert ds.classes == CIFAR10_CLASSES  # from the dataset's own batches.meta


def test_cifar_without_its_class_names_is_refused(cifar10_dir):
    os.remove(os.path.join(str(cifar10_dir), "cifar-10-batches-py", "batches.meta"))
    with pytest.raises(data.DataError, match="batches.meta, which names the classes, is missing"):
        data.load_dataset("cifar10", str(cifar10_dir), 67, download=False)


def test_load_tiny_cifar100_uses_fine_labels(tmp_path, monkeypatch):
    listing = write_cifar(tmp_path, "cifar100", per_batch=20, n_test=10)
    monkeypatch.setattr(data, "cifar_files", lambda name: listing)
    ds = data.load_dataset("cifar100", str(tmp_path), 67, download=False)
    assert ds.num_classes == 100
    assert ds.train_images.shape == (100, 3, 32, 32)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        assert ds.train_labels.tolist() == pickle.load(f, encoding="bytes")[b"fine_labels"]
    assert ds.classes[:2] == ["class0", "class1"] and len(ds.classes) == 100


def test_cifar_checksum_mismatch_raises_data_error(tmp_path, monkeypatch):
    folder, train, test = write_cifar(tmp_path, "cifar10")
    # unpatched, data.cifar_files gives the published checksums, which the tiny files cannot match
    with pytest.raises(data.DataError) as exc:
        data.load_dataset("cifar10", str(tmp_path), 67, download=False)
    assert "data_batch_1" in str(exc.value) and "corrupt" in str(exc.value)
    # one wrong checksum among correct ones is caught too
    bad = train[:-1] + [(train[-1][0], "0" * 32)]
    monkeypatch.setattr(data, "cifar_files", lambda name: (folder, bad, test))
    with pytest.raises(data.DataError, match="data_batch_5"):
        data.load_dataset("cifar10", str(tmp_path), 67, download=False)
    # and a file changed after its checksum was taken
    monkeypatch.setattr(data, "cifar_files", lambda name: (folder, train, test))
    data.load_dataset("cifar10", str(tmp_path), 67, download=False)  # intact: loads
    path = tmp_path / folder / "data_batch_3"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load_dataset("cifar10", str(tmp_path), 67, download=False)


def test_cifar_file_that_is_not_a_pickle_raises_data_error(tmp_path, monkeypatch):
    folder, train, test = write_cifar(tmp_path, "cifar10")
    garbage = tmp_path / folder / "test_batch"
    garbage.write_bytes(b"this is not a pickle")
    test = [("test_batch", md5(garbage))]
    monkeypatch.setattr(data, "cifar_files", lambda name: (folder, train, test))
    with pytest.raises(data.DataError, match="could not be read"):
        data.load_dataset("cifar10", str(tmp_path), 67, download=False)


def test_missing_cifar_without_download(tmp_path):
    with pytest.raises(data.DataError) as exc:
        data.load_dataset("cifar10", str(tmp_path / "none"), 67, download=False)
    assert str(tmp_path / "none") in str(exc.value)


# ---------------------------------------------------------------------------
# Image folders

def test_load_image_folder(image_folder_dir):
    ds = data.load_dataset("imagefolder", str(image_folder_dir), 67)
    assert ds.classes == ["cat", "dog", "frog"]
    assert ds.train_images.shape == (36, 3, 67, 67) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (12, 3, 67, 67)
    assert sorted(ds.train_labels.tolist()) == [0] * 12 + [1] * 12 + [2] * 12
    # the channel each class saturates survives the resize
    for i, y in enumerate(ds.train_labels.tolist()):
        assert ds.train_images[i, y].min() == 255


def test_image_folder_accepts_val_instead_of_test(tmp_path):
    write_image_folder(tmp_path, n_train=3, n_test=2, test_name="val")
    ds = data.load_dataset("imagefolder", str(tmp_path), 70)
    assert ds.test_images.shape == (6, 3, 70, 70)


def test_image_folder_without_test_split_raises(tmp_path):
    write_image_folder(tmp_path, n_train=2, n_test=1)
    import shutil
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(data.DataError, match="train/ and test/"):
        data.load_dataset("imagefolder", str(tmp_path), 67)


def test_image_folder_with_different_classes_raises(tmp_path):
    write_image_folder(tmp_path, n_train=2, n_test=1)
    os.rename(tmp_path / "test" / "frog", tmp_path / "test" / "toad")
    with pytest.raises(data.DataError, match="different class folders"):
        data.load_dataset("imagefolder", str(tmp_path), 67)


def test_image_folder_with_unreadable_image_raises(tmp_path):
    write_image_folder(tmp_path, n_train=2, n_test=1)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError, match="broken.png"):
        data.load_dataset("imagefolder", str(tmp_path), 67)


# ---------------------------------------------------------------------------
# Splits

def test_subset_regime_on_cifar10_size():
    train, val = data.split_indices(50_000, "subset")
    assert (len(train), len(val)) == (9_000, 1_000)


def test_full_regime_on_cifar10_size():
    train, val = data.split_indices(50_000, "full")
    assert (len(train), len(val)) == (45_000, 5_000)
    assert len(set(train.tolist()) | set(val.tolist())) == 50_000


@pytest.mark.parametrize("regime", ["subset", "full"])
def test_splits_are_disjoint_in_range_and_reproducible(regime):
    train, val = data.split_indices(50_000, regime)
    assert not set(train.tolist()) & set(val.tolist())
    assert train.min() >= 0 and max(train.max(), val.max()) < 50_000
    assert len(set(train.tolist())) == len(train)
    again = data.split_indices(50_000, regime)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    other = data.split_indices(50_000, regime, seed=7)
    assert not torch.equal(train, other[0])


def test_subset_is_drawn_from_the_same_fixed_fifth_as_full():
    sub_train, sub_val = data.split_indices(50_000, "subset")
    full_train, full_val = data.split_indices(50_000, "full")
    # the subset's validation images are the first tenth of the same permutation
    assert torch.equal(sub_val, full_val[:1_000])


def test_train_and_val_size_caps():
    train, val = data.split_indices(50_000, "subset", train_size=640, val_size=256)
    full_train, full_val = data.split_indices(50_000, "subset")
    assert (len(train), len(val)) == (640, 256)
    assert torch.equal(train, full_train[:640]) and torch.equal(val, full_val[:256])


def test_unknown_regime():
    with pytest.raises(ValueError):
        data.split_indices(100, "half")
