"""Training throughput: this project's loop against the study's way, in one run.

    python bench.py                         # steps: images/s of training steps, ours vs the study's way
    python bench.py --job                   # a whole run, end to end, both ways

The study's way: per-image PIL transforms (Resize, RandomHorizontalFlip(0.7),
ToTensor, Normalize) in a DataLoader in the main process, fp32, batch 64, and
for --job a second pass over the training set each epoch to measure training
accuracy. Ours: the dataset as uint8 on the device, batched transforms, the
precision --precision picks, training accuracy counted during the epoch.

Step mode uses synthetic data of CIFAR-10's shape (random 32x32 RGB uint8
images, 10 classes), so it needs no download. Both loops train the same model
on the same device; after a warm-up they alternate, --rounds times, and the
median of each is reported. --job trains one setting of a script on a real
dataset both ways and times each from start to test accuracy.
"""
import argparse
import itertools
import functools
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import data
from core.kernels import synchronize
from core.throughput import images_per_s, train_steps
from core.storage import WriteError, atomic_write_text
from core.device import out_of_memory, release_memory, resolve_precision, tune_backends, usable_device
from core.flags import OneLineParser, image_size, positive_int, whole_number
from alexnet import MIN_IMAGE_SIZE, AlexNet
from train import DEFAULTS, KERNELS, PRECISIONS, Group, Split, endless_group_batches, seed_everything

# Dense bf16/fp16 tensor-core peaks from the vendors' data sheets, in TFLOPS (fp32 accumulate),
# matched against torch.cuda.get_device_name; the share of peak uses these.
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.5, "H100": 756.5,
               "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0,
               "RTX 4090": 165.2, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


class StudyDataset(torch.utils.data.Dataset):
    """Images as the original scripts received them: one PIL image at a time through torchvision."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, image_size: int, train: bool):
        from torchvision import transforms
        self.images = images.permute(0, 2, 3, 1).numpy()  # N x H x W x C, as torchvision's CIFAR10 holds it
        self.labels = labels.tolist()
        steps = [transforms.Resize((image_size, image_size))]
        if train:
            steps.append(transforms.RandomHorizontalFlip(p=data.FLIP_P))
        steps += [transforms.ToTensor(), transforms.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)]
        self.transform = transforms.Compose(steps)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        img = self.images[i]
        img = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).convert("RGB")
        return self.transform(img), self.labels[i]


def study_loader(images, labels, image_size, train, batch_size=64):
    return torch.utils.data.DataLoader(StudyDataset(images, labels, image_size, train),
                                       batch_size=batch_size, shuffle=train, num_workers=0)


def study_model_and_optimizer(config, num_classes, device):
    """The same AlexNet, in fp32 and the default memory format, with torch's default Adam."""
    model = AlexNet(num_classes, config["activation"], config["dropout"], image_size=config["image_size"]).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=config["lr"])


def training_flops(image_size: int, num_classes: int = 10) -> float:
    """FLOPs of one training image (forward and backward: 3 x 2 x the forward's MACs), counted
    from the layers of alexnet.AlexNet as one image passes through them (on the meta device:
    shapes only, no memory, no arithmetic)."""
    macs = []

    def count(layer, inputs, output):
        macs.append(output[0].numel() * layer.weight[0].numel())  # outputs x MACs per output

    with torch.device("meta"):
        model = AlexNet(num_classes, image_size=image_size)
        for layer in model.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                layer.register_forward_hook(count)
        model(torch.empty(1, 3, image_size, image_size))
    return 6.0 * sum(macs)


def peak_tflops(device) -> tuple:
    """(name matched, dense half-precision peak in TFLOPS: bf16's, or fp16's on the V100 and T4,
    which have no bf16 units) for a CUDA device in PEAK_TFLOPS, else (None, None)."""
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_TFLOPS.items():
        if key in name:
            return key, peak
    return None, None


def study_step(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def study_accuracy(model, loader, device):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / len(loader.dataset)


def synthetic_split(args, device) -> tuple:
    """(images, labels, Split) of --images random 32x32 RGB uint8 images of 10 classes, all
    for training."""
    g = torch.Generator().manual_seed(0)
    n = args.images
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    dataset = data.Dataset("synthetic-cifar10", images, labels, images[:0], labels[:0], list(range(10)), "synthetic")
    split = Split(dataset, torch.arange(n), torch.arange(0), None, args.batch_size, args.image_size, device)
    return images, labels, split


class StudyLoop:
    """The study's way, as a loop of steps: called with a number of steps, trains them on
    the next batches of per-image PIL transforms and returns the images they held."""

    def __init__(self, config: dict, images, labels, args, device):
        seed_everything(0)
        self.model, self.optimizer = study_model_and_optimizer(config, 10, device)
        loader = study_loader(images, labels, args.image_size, True, args.batch_size)
        self.batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
        self.device = device

    def __call__(self, steps: int) -> int:
        images = 0
        for _ in range(steps):
            x, y = next(self.batches)
            study_step(self.model, self.optimizer, x.to(self.device), y.to(self.device))
            images += len(y)
        return images


class OursLoop:
    """k runs fused (seeds 0 .. k-1, the study's Adam 1e-4), k x batch images per step, each
    layer in the form --kernels says (auto: the faster, timed as training times it). Called
    with a number of steps, trains them and returns the images they held."""

    def __init__(self, config: dict, split, k: int, args, precision: str):
        self.group = Group([{**config, "seed": s} for s in range(k)], 10, split.train.device)
        self.batches = endless_group_batches(split.train, list(range(k)))
        self.kernels = self.group.choose_kernels(next(self.batches)[0], precision, args.kernels)
        forward = torch.compile(self.group.model) if args.compile else self.group.model
        self.step = self.group.make_step(precision, forward)
        self.k = k

    def __call__(self, steps: int) -> int:
        self.group.model.train()
        return train_steps(self.step, self.batches, steps)


def warmed_loops(config: dict, split, args, precision: str) -> tuple:
    """({"fuse K": OursLoop} for each --fuse K, warmed up, up to the first K that runs out of
    memory beside the smaller ones; that K, or None)."""
    loops = {}
    for k in args.fuse:
        try:
            loops[f"fuse {k}"] = OursLoop(config, split, k, args, precision)
            loops[f"fuse {k}"](args.warmup)
        except Exception as err:  # noqa: BLE001
            if not out_of_memory(err):
                raise
            loops.pop(f"fuse {k}", None)
            release_memory()
            # every smaller K's group is still held (the rounds alternate between them), so this is
            # the first K that does not fit beside them; alone, a larger one may fit
            print(f"fuse {k}: out of memory beside the groups of smaller K", flush=True)
            return loops, k  # larger K need more
    return loops, None


def time_rounds(loops: dict, args, device) -> dict:
    """Each loop's images/s in each of --rounds rounds, the loops taking turns within a round."""
    timings = {name: [] for name in loops}
    for r in range(args.rounds):
        for name, loop in loops.items():
            timings[name].append(images_per_s(loop, args.steps, device))
            print(f"round {r + 1}/{args.rounds}  {name:8s}  {timings[name][-1]:9.1f} images/s", flush=True)
    return timings


def bench_steps(args, device, precision):
    """Step mode: images/s of the study's way and of our loop at each --fuse K on synthetic
    data, the loops alternating --rounds times after a warm-up; medians and their ratios."""
    images, labels, split = synthetic_split(args, device)
    config = {**DEFAULTS, "image_size": args.image_size, "precision": precision, "compile": args.compile}
    study = StudyLoop(config, images, labels, args, device)
    ours, too_large = warmed_loops(config, split, args, precision)
    study(args.warmup)
    synchronize(device)
    timings = time_rounds({"study": study, **ours}, args, device)
    study_ips = float(np.median(timings["study"]))
    flops = training_flops(args.image_size)
    matched, peak = peak_tflops(device)
    rows = []
    for name, loop in ours.items():
        ips = float(np.median(timings[name]))
        tflops = ips * flops / 1e12
        rows.append({"fuse": loop.k, "images_per_s": ips, "ratio": ips / study_ips, "tflops": tflops,
                     "peak_share": tflops / peak if peak and precision in ("bf16", "fp16") else None,
                     "rounds": timings[name], "kernels": loop.kernels})
    # unrounded: each ratio is the quotient of the two rates exactly as stored
    return {"mode": "steps", "study_images_per_s": study_ips, "study_rounds": timings["study"], "ours": rows,
            "out_of_memory_at_fuse": too_large, "training_gflop_per_image": flops / 1e9, "peak_tflops": peak,
            "peak_matched": matched}


def bench_job(args, device, precision):
    """One setting (Adam 1e-4, ReLU) for --epochs epochs: train, per-epoch training and
    validation accuracy, final test accuracy; both ways on the same split."""
    dataset = data.load_dataset(args.dataset, args.data_dir)
    train_idx, val_idx = data.split_indices(len(dataset.train_labels), "subset", args.train_size, args.val_size)
    test_idx = torch.arange(min(args.test_size, len(dataset.test_labels)))
    config = {**DEFAULTS, "image_size": args.image_size, "precision": precision, "compile": args.compile,
              "epochs": args.epochs, "batch_size": args.batch_size, "test_size": len(test_idx)}
    times = {}

    start = time.perf_counter()
    seed_everything(0)
    model, optimizer = study_model_and_optimizer(config, dataset.num_classes, device)
    pick = lambda images, labels, idx: (images[idx], labels[idx])
    train_loader = study_loader(*pick(dataset.train_images, dataset.train_labels, train_idx), args.image_size, True)
    train_eval = study_loader(*pick(dataset.train_images, dataset.train_labels, train_idx), args.image_size, False)
    val_loader = study_loader(*pick(dataset.train_images, dataset.train_labels, val_idx), args.image_size, False)
    test_loader = study_loader(*pick(dataset.test_images, dataset.test_labels, test_idx), args.image_size, False)
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            study_step(model, optimizer, x.to(device), y.to(device))
        train_acc = study_accuracy(model, train_eval, device)
        val_acc = study_accuracy(model, val_loader, device)
        print(f"study way epoch {epoch + 1}: train_acc {train_acc:.3f} val_acc {val_acc:.3f}", flush=True)
    study_test = study_accuracy(model, test_loader, device)
    synchronize(device)
    times["study"] = time.perf_counter() - start

    from train import train_run
    start = time.perf_counter()
    split = Split(dataset, train_idx, val_idx, len(test_idx), args.batch_size, args.image_size, device)
    outcome = train_run(config, split, dataset.num_classes, desc="ours")
    synchronize(device)
    times["ours"] = time.perf_counter() - start
    print(f"test accuracy: study way {study_test:.4f}, ours {outcome['test_acc']:.4f}")
    return {"mode": "job", "dataset": args.dataset, "train_images": len(train_idx), "val_images": len(val_idx),
            "test_images": len(test_idx), "epochs": args.epochs, "study_seconds": round(times["study"], 2),
            "ours_seconds": round(times["ours"], 2), "ratio": round(times["study"] / times["ours"], 2),
            "study_test_acc": study_test, "ours_test_acc": outcome["test_acc"]}


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def parser() -> OneLineParser:
    p = OneLineParser(prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", action="store_true", help="time a whole run end to end instead of training steps")
    p.add_argument("--image-size", type=functools.partial(image_size, smallest=MIN_IMAGE_SIZE), default=227,
                   help="input side in pixels, 67 to 1024 (default: 227)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch size (default: 64)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps per round and loop (default: 10)")
    p.add_argument("--warmup", type=lambda t: whole_number(t, 0), default=3, help="untimed steps per loop first (default: 3)")
    p.add_argument("--rounds", type=positive_int, default=3, help="alternating timed rounds (default: 3)")
    p.add_argument("--images", type=positive_int, default=50_000, help="synthetic images for step mode (default: 50000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="our loop's precision (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (default: off)")
    p.add_argument("--fuse", type=positive_int, nargs="+", default=[1], metavar="K",
                   help="step mode: time our loop with K runs fused, for each K given; a K that runs out of "
                        "memory ends the list (default: 1)")
    p.add_argument("--kernels", choices=KERNELS, default="auto",
                   help="fused layers' form: auto (the faster per layer, timed), grouped or split (default: auto)")
    p.add_argument("--dataset", default="fashion-mnist", help="--job: dataset (default: fashion-mnist)")
    p.add_argument("--data-dir", default="data", help="--job: data folder (default: data)")
    p.add_argument("--epochs", type=positive_int, default=2, help="--job: epochs (default: 2)")
    p.add_argument("--train-size", type=positive_int, default=512, help="--job: training images (default: 512)")
    p.add_argument("--val-size", type=positive_int, default=256, help="--job: validation images (default: 256)")
    p.add_argument("--test-size", type=positive_int, default=256, help="--job: test images (default: 256)")
    p.add_argument("--json", default=None, help="where to write the figures (default: results/bench[_job].json)")
    return p


def print_steps_summary(result: dict) -> None:
    """Step mode's medians: the study's way, then each K of ours with its ratio and share of peak."""
    print(f"median: study's way {result['study_images_per_s']:.1f} images/s")
    for row in result["ours"]:
        share = f", {100 * row['peak_share']:.1f}% of {result['peak_matched']}'s {result['peak_tflops']} TFLOPS " \
                "dense bf16 peak" if row["peak_share"] is not None else ""
        forms = row["kernels"].get("kernels")
        print(f"ours, {row['fuse']} run(s) fused: {row['images_per_s']:.1f} images/s, {row['ratio']:.2f}x, "
              f"{row['tflops']:.2f} TFLOPS{share}"
              + (f"; kernels: {', '.join(f'{n} {f}' for n, f in forms.items())}" if forms else ""))
    one = next((row for row in result["ours"] if row["fuse"] == 1), None)
    if one:
        print("fused vs one run: " + ", ".join(f"K = {row['fuse']} {row['images_per_s'] / one['images_per_s']:.2f}x"
                                               for row in result["ours"] if row["fuse"] > 1))


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        device = usable_device(args.device)
    except ValueError as err:
        p.error(f"argument --device: {err}")

    precision = resolve_precision(args.precision, device)
    tune_backends(device)
    print(f"device {device} ({device_name(device)}), our precision {precision}, study's fp32, "
          f"{args.image_size} px, batch {args.batch_size}", flush=True)
    try:
        result = bench_job(args, device, precision) if args.job else bench_steps(args, device, precision)
    except data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result.update(device=str(device), device_name=device_name(device), precision=precision,
                  image_size=args.image_size, batch_size=args.batch_size, torch=torch.__version__,
                  command="python bench.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.job:
        print(f"whole run: study's way {result['study_seconds']:.1f} s, ours {result['ours_seconds']:.1f} s, "
              f"{result['ratio']:.2f}x")
    else:
        print_steps_summary(result)
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                     "bench_job.json" if args.job else "bench.json")
    try:
        atomic_write_text(path, json.dumps(result, indent=1))
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
