"""Datasets, the study's splits, and batched augmentation on the training device.

Every dataset is held as a uint8 tensor at its stored resolution (CIFAR-10:
50,000 x 3 x 32 x 32, 150 MB) on the device that trains. Each batch is
gathered, flipped, resized to --image-size and normalised there in one batched
step, with the statistics of the study's per-image torchvision transforms:

    train: Resize(227) -> RandomHorizontalFlip(p=0.7) -> ToTensor -> Normalize(ImageNet)
    eval:  Resize(227) -> ToTensor -> Normalize(ImageNet)

Nothing here touches the disk or the network at import time.
"""
import functools
import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder")
REGIMES = ("subset", "full")
SPLIT_SEED = 42  # the study's seed for its fixed fifth of the training set
FLIP_P = 0.7
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataError(Exception):
    """A dataset is missing or corrupt; the message is one sentence for the user."""


@dataclass
class Dataset:
    name: str
    train_images: torch.Tensor  # uint8, N x C x H x W (C = 1 for grayscale, 3 otherwise)
    train_labels: torch.Tensor  # int64, N
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list
    source: str  # where the files were read from

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------
# Loading

def load_dataset(name: str, data_dir: str = "data", image_size: int = 227,
                 download: bool = True) -> Dataset:
    """Read a dataset from local files, downloading it first where it is missing and
    data_dir is writable. Raises DataError with one clear sentence otherwise."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name in ("cifar10", "cifar100"):
        dataset = _load_cifar(name, data_dir, download)
    elif name in ("mnist", "fashion-mnist"):
        dataset = _load_idx(name, data_dir, download)
    else:
        dataset = _load_image_folder(data_dir, image_size)
    check_dataset(dataset)
    return dataset


def check_dataset(ds: Dataset) -> None:
    """Images and labels agree in number and every label names one of the classes;
    DataError in one sentence otherwise, before anything is trained or written."""
    if ds.num_classes < 2:
        raise DataError(f"{ds.source} holds {ds.num_classes} class(es); classification needs at least two")
    for part, images, labels in (("training", ds.train_images, ds.train_labels),
                                 ("test", ds.test_images, ds.test_labels)):
        if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3):
            raise DataError(f"the {part} images in {ds.source} are not N x C x H x W uint8 images")
        if len(images) != len(labels):
            raise DataError(f"{ds.source} has {len(images)} {part} images but {len(labels)} labels")
        if len(labels) == 0:
            raise DataError(f"{ds.source} has no {part} images")
        bad = ((labels < 0) | (labels >= ds.num_classes)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{ds.source}: {part} label {int(labels[i])} (image {i}) is not one of the "
                            f"{ds.num_classes} classes 0..{ds.num_classes - 1}; the label file is damaged "
                            f"or belongs to another dataset")
    present = torch.unique(ds.train_labels)
    if len(present) < 2:  # IDX and CIFAR name their classes in code, not by what their label files hold
        label = int(present[0])
        raise DataError(f"every training label in {ds.source} is {label} ({ds.classes[label]}), a single class; "
                        f"classification needs at least two")


def check_found_in(ds: Dataset, data_dir: str) -> None:
    """DataError where ds was read from outside data_dir (fashion-mnist falls back to Debian's
    copy): for a tool whose --data-dir names the data it must use, not a first place to look."""
    folder = os.path.realpath(data_dir)
    if os.path.commonpath([os.path.realpath(ds.source), folder]) != folder:
        raise DataError(f"{ds.name} was not found in {os.path.abspath(data_dir)}, only in {ds.source}; pass "
                        f"--data-dir {ds.source} to use that copy, or a folder that holds the data")


def _writable(path: str) -> bool:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.access(path, os.W_OK)


def _download(fetch, name: str, data_dir: str, how: str) -> None:
    """Let torchvision download into data_dir; never into a read-only folder."""
    if not _writable(data_dir):
        raise DataError(f"{name} was not found in {os.path.abspath(data_dir)}, which is read-only, "
                        f"so it cannot be downloaded there; {how}")
    try:
        fetch(root=data_dir, download=True)
    except Exception as err:  # network errors come in many types
        raise DataError(f"{name} was not found in {os.path.abspath(data_dir)} and downloading it "
                        f"failed ({type(err).__name__}); {how}") from None


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cifar_class(name: str):
    from torchvision import datasets
    return datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100


def cifar_files(name: str) -> tuple:
    """(folder, [(file, md5)] for training, [(file, md5)] for test), as torchvision publishes them."""
    cls = _cifar_class(name)
    return cls.base_folder, [tuple(f) for f in cls.train_list], [tuple(f) for f in cls.test_list]


def _load_cifar(name: str, data_dir: str, download: bool) -> Dataset:
    folder, train_list, test_list = cifar_files(name)
    root = os.path.join(data_dir, folder)
    url = _cifar_class(name).url
    how = f"download {url} and extract it into {os.path.abspath(data_dir)}"
    present = all(os.path.exists(os.path.join(root, f)) for f, _ in train_list + test_list)
    if not present:
        if not download:
            raise DataError(f"{name} was not found in {os.path.abspath(root)}; {how}")
        _download(_cifar_class(name), name, data_dir, how)
    label_key = b"labels" if name == "cifar10" else b"fine_labels"

    def read(files):
        images, labels = [], []
        for fname, md5 in files:
            path = os.path.join(root, fname)
            if _md5(path) != md5:
                raise DataError(f"{path} is corrupt (its checksum does not match the published one); "
                                f"delete it and {how}")
            try:
                with open(path, "rb") as f:
                    batch = pickle.load(f, encoding="bytes")
                images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(batch[label_key])
            except Exception:
                raise DataError(f"{path} could not be read as a CIFAR batch; delete it and {how}") from None
        return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)

    train_x, train_y = read(train_list)
    test_x, test_y = read(test_list)
    return Dataset(name, train_x, train_y, test_x, test_y, _cifar_classes(name, root, how), root)


def _cifar_classes(name: str, root: str, how: str) -> list:
    """The class names in the dataset's own metadata file (batches.meta or meta)."""
    meta = _cifar_class(name).meta
    path = os.path.join(root, meta["filename"])
    num_classes = 10 if name == "cifar10" else 100
    try:
        with open(path, "rb") as f:
            names = pickle.load(f, encoding="bytes")[meta["key"].encode()]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except FileNotFoundError:
        raise DataError(f"{path}, which names the classes, is missing; {how}") from None
    except Exception:
        raise DataError(f"{path} could not be read as CIFAR's class names; delete it and {how}") from None
    if len(names) != num_classes:
        raise DataError(f"{path} names {len(names)} classes where {name} has {num_classes}; {how}")
    return names


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise ValueError("not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError("IDX file is truncated")
    return data.reshape(tuple(dims))


def _idx_folders(name: str, data_dir: str) -> list:
    sub = "MNIST" if name == "mnist" else "FashionMNIST"
    folders = [os.path.join(data_dir, sub, "raw"), data_dir]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    return folders


def _find_idx(folder: str) -> list | None:
    """The four IDX files in folder, None if it holds none; DataError if it holds only some."""
    found, missing = [], []
    for stem in IDX_FILES:
        for candidate in (stem + ".gz", stem):
            if os.path.exists(os.path.join(folder, candidate)):
                found.append(os.path.join(folder, candidate))
                break
        else:
            missing.append(stem + ".gz")
    if missing and found:
        raise DataError(f"{os.path.abspath(folder)} holds {len(found)} of the 4 IDX files; "
                        f"{', '.join(missing)} is missing")
    return None if missing else found


def _load_idx(name: str, data_dir: str, download: bool) -> Dataset:
    from torchvision import datasets
    fetch = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    folders = _idx_folders(name, data_dir)
    how = ("install Debian's dataset-fashion-mnist package or copy the four *-ubyte.gz files there"
           if name == "fashion-mnist" else "copy the four *-ubyte.gz files there")
    files = next((f for f in map(_find_idx, folders) if f), None)
    if files is None:
        if not download:
            raise DataError(f"{name} was not found in {os.path.abspath(data_dir)}; {how}")
        _download(fetch, name, data_dir, how)
        files = _find_idx(folders[0])
    arrays = []
    for path in files:
        try:
            arrays.append(read_idx(path))
        except Exception as err:
            raise DataError(f"{path} is corrupt ({err}); replace it: {how}") from None
    for path, array, ndim in zip(files, arrays, (3, 1, 3, 1)):
        if array.ndim != ndim:
            raise DataError(f"{path} holds {array.ndim}-dimensional data where "
                            f"{'images' if ndim == 3 else 'labels'} are expected (are files swapped?); {how}")
    train_x, train_y, test_x, test_y = arrays
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(f"the image and label files in {os.path.dirname(files[0])} disagree in length; {how}")
    as_images = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)  # N x 1 x 28 x 28
    as_labels = lambda a: torch.from_numpy(a.astype(np.int64))
    return Dataset(name, as_images(train_x), as_labels(train_y), as_images(test_x), as_labels(test_y),
                   list(fetch.classes), os.path.dirname(files[0]))


def _repeated_folder(folder: str) -> str | None:
    """The first folder under folder, walked following links as ImageFolder walks, whose real
    path was already reached on this walk (a link loop, or a second way to one folder); None if none."""
    seen = {os.path.realpath(folder)}
    for root, dirs, _ in os.walk(folder, followlinks=True):
        for d in dirs:
            real = os.path.realpath(os.path.join(root, d))
            if real in seen:
                return os.path.join(root, d)
            seen.add(real)
    return None


def _load_image_folder(data_dir: str, image_size: int) -> Dataset:
    """train/ and test/ (or val/) folders of class subfolders. Images of any size are
    resized once, on loading, to image_size and held as uint8."""
    from PIL import Image
    from torchvision.datasets import ImageFolder
    how = "it must hold train/ and test/ (or val/) folders of class subfolders of images"
    train_dir = os.path.join(data_dir, "train")
    test_dir = next((os.path.join(data_dir, d) for d in ("test", "val")
                     if os.path.isdir(os.path.join(data_dir, d))), None)
    if not os.path.isdir(train_dir) or test_dir is None:
        raise DataError(f"no image folder dataset in {os.path.abspath(data_dir)}: {how}")

    def read(folder):
        repeated = _repeated_folder(folder)
        if repeated:
            raise DataError(f"{repeated} leads to {os.path.realpath(repeated)}, a folder already reached in "
                            f"{os.path.abspath(folder)} (a link loop, or a second link to it), so its images would "
                            f"be repeated or mislabelled; remove the link")
        try:
            found = ImageFolder(folder)
        except Exception as err:
            raise DataError(f"{os.path.abspath(folder)} could not be read ({err}); {how}") from None
        images = np.empty((len(found.samples), image_size, image_size, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(found.samples):
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                    images[i] = np.asarray(img)
            except Image.DecompressionBombError:
                raise DataError(f"{path} is too large to decode safely (PIL refuses images of more than "
                                f"{Image.MAX_IMAGE_PIXELS:,} pixels); shrink or remove it") from None
            except Exception:
                raise DataError(f"{path} is not a readable image; remove or replace it") from None
        labels = torch.tensor(found.targets, dtype=torch.int64)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, found.classes

    train_x, train_y, classes = read(train_dir)
    test_x, test_y, test_classes = read(test_dir)
    if test_classes != classes:
        raise DataError(f"{train_dir} and {test_dir} hold different class folders; they must match")
    return Dataset("imagefolder", train_x, train_y, test_x, test_y, classes, os.path.abspath(data_dir))


# ---------------------------------------------------------------------------
# Splits

def split_indices(num_train: int, regime: str = "subset", train_size: int | None = None,
                  val_size: int | None = None, seed: int = SPLIT_SEED) -> tuple:
    """The study's split regimes, reproducible from seed and disjoint.

    subset: a fixed fifth of the training set, then 90% train / 10% validation
            (CIFAR-10: 10,000 images -> 9,000 / 1,000).
    full:   90% train / 10% validation of the whole set (CIFAR-10: 45,000 / 5,000).
    train_size / val_size shrink either part; validation images never enter training.
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose from {', '.join(REGIMES)}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_train, generator=g)
    pool = order[: num_train // 5] if regime == "subset" else order
    n_val = len(pool) // 10
    val_idx, train_idx = pool[:n_val], pool[n_val:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    if val_size is not None:
        val_idx = val_idx[:val_size]
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DataError(f"the {regime} regime leaves {len(train_idx)} training and {len(val_idx)} validation "
                        f"images of the {num_train} in the dataset; both need at least one "
                        f"(use --regime full or a larger dataset)")
    return train_idx, val_idx


# ---------------------------------------------------------------------------
# Batched transforms on the device

def transform_batch(images: torch.Tensor, image_size: int, flip: torch.Tensor | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 N x C x h x w -> normalised float N x 3 x image_size x image_size.

    Same arithmetic as PIL's bilinear Resize, ToTensor and Normalize per image,
    without the rounding to uint8 after PIL's resize (within 1/255 of it).
    flip is a boolean mask of the images to mirror horizontally.
    """
    x = images.float()
    if flip is not None:
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if x.shape[-2:] != (image_size, image_size):
        # antialiasing, as PIL does, matters only when shrinking
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=image_size < max(x.shape[-2:]))
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    scale, shift = _normalisation(x.device)
    return torch.addcmul(shift, x, scale).to(dtype)  # (x / 255 - mean) / std in one kernel


@functools.lru_cache(maxsize=None)
def _normalisation(device: torch.device) -> tuple:
    """Per-channel scale and shift of Normalize(ImageNet) applied to 0..255 values,
    made once per device: building them per batch would copy to the GPU and wait for it."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (1 / (255 * std)).float().to(device), (-mean / std).float().to(device)


class DeviceLoader:
    """Batches of (inputs, labels) from a uint8 tensor held on the training device.

    Training order and flips for an epoch come from a CPU generator seeded with
    (seed, epoch), so an epoch's batches are the same on every device, after a
    resume, and for any number of processes: with world_size > 1 each rank
    yields its share (every world_size-th image) of each global batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                 batch_size: int, image_size: int, device: torch.device, train: bool,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.indices = indices.to(device)
        self.batch_size = batch_size
        self.image_size = image_size
        self.device = device
        self.train = train
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size

    def global_batch_size(self, step: int) -> int:
        return min(self.batch_size, len(self.indices) - step * self.batch_size)

    def batches(self, seed: int = 0, epoch: int = 0):
        n = len(self.indices)
        order, flips = torch.arange(n), None
        if self.train:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g)
            flips = (torch.rand(n, generator=g) < FLIP_P).to(self.device)
        order = order.to(self.device)
        for start in range(0, n, self.batch_size):
            # under torchrun each process takes its share of the same global batch
            pos = order[start:start + self.batch_size][self.rank::self.world_size]
            idx = self.indices[pos]
            x = transform_batch(self.images[idx], self.image_size, None if flips is None else flips[pos])
            yield x.contiguous(memory_format=self.memory_format), self.labels[idx]
