"""data.transform_batch against torchvision's per-image transforms, and data.DeviceLoader's
order, coverage and flips."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

import data

STD = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
MEAN = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)


def reference(images_nhwc, size, flip=None):
    """The study's per-image pipeline on PIL images: (flip) -> Resize -> ToTensor -> Normalize."""
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                             transforms.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)])
    out = []
    for i, a in enumerate(images_nhwc):
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).convert("RGB")
        if flip is not None and flip[i]:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(tf(img))
    return torch.stack(out)


def pixel_diff(a, b):
    """|a - b| in [0, 1] pixel units (undoing the division by std)."""
    return ((a - b) * STD).abs()


def random_images(n, side, channels, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, channels), dtype=np.uint8)


@pytest.mark.parametrize("side, channels", [(32, 3), (28, 1)])
@pytest.mark.parametrize("size", [67, 227])
def test_matches_torchvision_per_image_transforms(side, channels, size):
    imgs = random_images(6, side, channels, seed=side + size)
    ref = reference(imgs, size)
    got = data.transform_batch(torch.from_numpy(imgs).permute(0, 3, 1, 2), size)
    assert got.shape == (6, 3, size, size) and got.dtype == torch.float32
    diff = pixel_diff(got, ref)
    assert diff.max().item() < 2 / 255
    assert diff.mean().item() < 0.5 / 255


def test_no_resize_at_native_size_is_exact_normalisation():
    imgs = random_images(3, 32, 3)
    got = data.transform_batch(torch.from_numpy(imgs).permute(0, 3, 1, 2), 32)
    ref = reference(imgs, 32)
    assert torch.allclose(got, ref, atol=1e-6)


def test_grayscale_is_replicated_to_three_channels():
    imgs = torch.from_numpy(random_images(2, 28, 1)).permute(0, 3, 1, 2)
    got = data.transform_batch(imgs, 67)
    unnormalised = got * STD + MEAN
    assert torch.allclose(unnormalised[:, 0], unnormalised[:, 1], atol=1e-6)
    assert torch.allclose(unnormalised[:, 0], unnormalised[:, 2], atol=1e-6)


def test_flip_mask_mirrors_exactly_the_masked_images():
    imgs_np = random_images(6, 32, 3, seed=3)
    imgs = torch.from_numpy(imgs_np).permute(0, 3, 1, 2)
    mask = torch.tensor([True, False, True, True, False, False])
    flipped = data.transform_batch(imgs, 67, mask)
    plain = data.transform_batch(imgs, 67)
    mirrored = data.transform_batch(imgs.flip(3), 67)
    assert torch.equal(flipped[~mask], plain[~mask])
    assert torch.equal(flipped[mask], mirrored[mask])
    # mirroring commutes with the (symmetric) resize, and the unflipped images really differ
    assert torch.allclose(flipped[mask], plain[mask].flip(3), atol=1e-5)
    assert not torch.allclose(flipped[mask], plain[mask], atol=1e-3)
    # and it is torchvision's horizontal flip
    ref = reference(imgs_np, 67, flip=mask.tolist())
    assert pixel_diff(flipped, ref).max().item() < 2 / 255


def test_output_dtype_option():
    imgs = torch.from_numpy(random_images(2, 32, 3)).permute(0, 3, 1, 2)
    assert data.transform_batch(imgs, 67, dtype=torch.bfloat16).dtype == torch.bfloat16


# ---------------------------------------------------------------------------
# DeviceLoader

def marked_images(n, side=8):
    """Images whose left half is 0 and right half 255: a flip shows as a bright left column."""
    imgs = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    imgs[..., side // 2:] = 255
    return imgs


def flipped_of(x):
    # left column bright means the image was mirrored (no resize at the native size)
    return x[:, 0, :, 0].mean(1) > x[:, 0, :, -1].mean(1)


def make_loader(n=1000, indices=None, batch_size=64, train=True):
    labels = torch.arange(n)
    indices = torch.arange(n) if indices is None else indices
    return data.DeviceLoader(marked_images(n), labels, indices, batch_size, 8, torch.device("cpu"), train=train)


def test_flip_frequency_is_close_to_0_7():
    loader = make_loader(n=4000, batch_size=500)
    flips = torch.cat([flipped_of(x) for x, _ in loader.batches(seed=0, epoch=0)])
    assert len(flips) == 4000
    # binomial std at n = 4000 is 0.0072; allow more than 4 sigma
    assert abs(flips.float().mean().item() - data.FLIP_P) < 0.03
    assert data.FLIP_P == 0.7


def test_each_epoch_covers_every_index_exactly_once():
    n = 300
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:130]
    loader = make_loader(n=n, indices=indices, batch_size=32)
    assert len(loader) == 5  # ceil(130 / 32)
    for epoch in range(3):
        batches = list(loader.batches(seed=5, epoch=epoch))
        assert len(batches) == 5
        assert [len(y) for _, y in batches] == [32, 32, 32, 32, 2]
        seen = torch.cat([y for _, y in batches])
        assert sorted(seen.tolist()) == sorted(indices.tolist())
        for x, y in batches:
            assert x.shape == (len(y), 3, 8, 8) and x.dtype == torch.float32


def test_same_seed_and_epoch_give_the_same_batches():
    loader = make_loader(n=200, batch_size=32)
    a = list(loader.batches(seed=3, epoch=2))
    b = list(loader.batches(seed=3, epoch=2))
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_different_epochs_and_seeds_give_different_orders_and_flips():
    loader = make_loader(n=200, batch_size=200)
    (x0, y0), = loader.batches(seed=3, epoch=0)
    (x1, y1), = loader.batches(seed=3, epoch=1)
    (x2, y2), = loader.batches(seed=4, epoch=0)
    assert not torch.equal(y0, y1)
    assert not torch.equal(y0, y2)
    # the flips differ per image too, not only the order
    f0 = flipped_of(x0)[torch.argsort(y0)]
    f1 = flipped_of(x1)[torch.argsort(y1)]
    assert not torch.equal(f0, f1)


def test_eval_loader_walks_in_order_without_flips():
    indices = torch.tensor([5, 3, 9, 0, 7])
    loader = make_loader(n=10, indices=indices, batch_size=2, train=False)
    batches = list(loader.batches())
    assert torch.cat([y for _, y in batches]).tolist() == [5, 3, 9, 0, 7]
    assert not any(flipped_of(x).any() for x, _ in batches)
