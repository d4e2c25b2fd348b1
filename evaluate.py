"""Evaluate and inspect a trained model from its checkpoint; never trains.

    python evaluate.py models/consolidated/consolidated.pt
    python evaluate.py models/activation/elu.pt --images cat.png shoe.jpg

Without --images: the checkpoint's test split (its config names the dataset, the
split, the image size and the precision), evaluated in eval mode exactly as at
the end of training, and written as
    results/<experiment>_<run>_eval.json    test_acc, per-class accuracy by class
                                            name, confusion matrix (rows: true
                                            class, columns: predicted), counts
    images/<experiment>_<run>_confusion.png  the confusion matrix, each row
                                            normalised to the true class's images
    images/<experiment>_<run>_filters.png    conv1's 96 filters as an image grid
    images/<experiment>_<run>_mistakes.png   the most confident wrong predictions
and printed as the accuracy and a per-class table.

With --images: each image (any size, colour or grey) resized as in training,
and the top five classes with their probabilities.
"""
import argparse
import json
import os
import sys

import numpy as np

from core import checkpoints
from core import logs
from core import storage
from core.results import evaluation_paths

ROOT = os.path.dirname(os.path.abspath(__file__))
SCHEMA = ("model", "config", "num_classes", "classes", "experiment", "name")


class InputError(Exception):
    """Bad input from the user (a file that is not ours, an unreadable image); one sentence."""


def load_model(path: str):
    """(plain AlexNet in eval mode on the CPU, the checkpoint) from one of this repository's
    checkpoints; InputError otherwise."""
    from alexnet import loaded
    if not os.path.exists(path):
        raise InputError(missing_checkpoint(path))
    try:
        ckpt = checkpoints.load(path)
    except checkpoints.CheckpointError as err:
        raise InputError(str(err)) from None
    missing = [k for k in SCHEMA if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict):
        what = "a resume checkpoint, not a finished run's" if "optimizer" in ckpt else \
            f"missing {', '.join(missing) or 'config'}"
        raise InputError(f"{path} is not a finished run's checkpoint of this repository ({what})")
    c = ckpt["config"]
    try:
        model = loaded(ckpt["model"], num_classes=ckpt["num_classes"], activation=c["activation"],
                       dropout=c["dropout"], image_size=c["image_size"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise InputError(f"{path} does not hold an AlexNet this repository can build "
                         f"({logs.shorten(str(err).splitlines()[0], 120)})") from None
    return model.eval(), ckpt


def missing_checkpoint(path: str) -> str:
    """One sentence for a checkpoint that is not there, naming what --save kept instead."""
    best = path.endswith(".best.pt")
    other = path[:-len(".best.pt")] + ".pt" if best else path[:-len(".pt")] + ".best.pt" if path.endswith(".pt") \
        else None
    if other and os.path.exists(other):
        kept = "last epoch's" if best else "best validation epoch's"
        try:  # what --save kept, from the file that is there: a --save both run had both
            ckpt = checkpoints.load(other, mmap=True)
            save, epoch, epochs = ckpt["config"].get("save"), ckpt.get("epoch"), len(ckpt["history"]["loss"])
        except (checkpoints.CheckpointError, KeyError, TypeError, AttributeError):
            save = epoch = epochs = None
        if save == ("last" if best else "best"):
            return f"{path} does not exist: this run kept only its {kept} weights (--save {save}); evaluate {other}"
        if save == "both":
            same = not best and epoch == epochs  # its best epoch was its last: the two names were one file
            return (f"{path} does not exist: the run kept both files (--save both), so it was deleted or moved "
                    f"since; " + (f"{other} holds the same weights (its best epoch was its last): evaluate that"
                                  if same else f"evaluate {other}, or retrain the run (--fresh) to write it again"))
        return f"{path} does not exist; {other} holds this run's {kept} weights: evaluate that"
    return (f"{path} does not exist (a run trained with --save none keeps no weights; its record is in "
            f"results/ and its plots in images/)")


def prepare(path: str, device_name: str | None, precision: str | None) -> tuple:
    """(model on the device, checkpoint, device, precision): the run's own precision unless
    one is given, so that the accuracy matches the recorded one."""
    from core.device import resolve_precision, usable_device
    model, ckpt = load_model(path)
    try:
        device = usable_device(device_name or "auto")
    except ValueError as err:
        raise InputError(f"argument --device: {err}") from None
    if precision is None:
        precision = own_precision(ckpt["config"].get("precision", "auto"), device)
    return model.to(device), ckpt, device, resolve_precision(precision, device)


def own_precision(recorded: str, device) -> str:
    """The run's recorded precision where this device computes it natively; otherwise the
    device's own rule (--precision auto), said in one line: a bf16 run from an A100 evaluated
    on a T4 or V100, where bf16 is only emulated, or an fp16 run on a CPU, would be many times
    slower for a difference in accuracy of a few images at most."""
    import torch
    from core.device import resolve_precision
    auto = resolve_precision("auto", device)
    native = {"fp32", auto}
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (7, 0):
        native.add("fp16")
    if recorded == "auto" or recorded in native:
        return recorded
    print(f"the run trained in {recorded}, which {device} does not compute natively: evaluating in {auto} (its own "
          f"--precision auto; --precision {recorded} forces the recorded one)")
    return auto


def predictions(model, ckpt: dict, data_dir: str | None, device, precision: str):
    """(logits on the test split as training evaluated it, labels, the dataset)."""
    import torch
    import data
    import train
    from core.fused import FusedAlexNet
    c = ckpt["config"]
    dataset = data.load_dataset(c["dataset"], data_dir or c["data_dir"], c["image_size"])
    if data_dir:  # given, it names the data to use: never another copy found elsewhere
        data.check_found_in(dataset, data_dir)
    if dataset.num_classes != ckpt["num_classes"]:
        raise InputError(f"the checkpoint has {ckpt['num_classes']} classes but {c['dataset']} in "
                         f"{dataset.source} has {dataset.num_classes}")
    classes = [str(name) for name in dataset.classes]
    if classes != list(ckpt["classes"]):
        names = lambda items: logs.shorten(", ".join(map(str, items)), 80)
        raise InputError(f"the checkpoint was trained on the classes {names(ckpt['classes'])} but {c['dataset']} "
                         f"in {dataset.source} holds {names(classes)}; evaluate it on the data it was trained on")
    train_idx, val_idx = data.split_indices(len(dataset.train_labels), c["regime"], c["train_size"], c["val_size"])
    split = train.Split(dataset, train_idx, val_idx, c["test_size"], c["batch_size"], c["image_size"], device)
    # the module that evaluated it in training: the same kernels give the same numbers
    fused = FusedAlexNet([model], [c["activation"]], [c["dropout"]], [None]).to(device).eval()
    if train.use_channels_last(device):
        fused = fused.to(memory_format=torch.channels_last)
    logits, labels = [], []
    with torch.inference_mode():
        for x, y in split.test.batches():
            with train.autocast(device, precision):
                logits.append(fused(x)[0].float().cpu())
            labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels), dataset, split


def summarize(logits, labels, classes: list) -> dict:
    import torch
    predicted = logits.argmax(1)
    n = len(classes)
    confusion = torch.zeros(n, n, dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for i, name in enumerate(classes):
        total = int(confusion[i].sum())
        per_class[name] = None if total == 0 else int(confusion[i, i]) / total
    return {"test_acc": int(confusion.diag().sum()) / max(len(labels), 1), "test_images": len(labels),
            "classes": list(classes), "per_class": per_class, "confusion": confusion.tolist()}


def plot_confusion(summary: dict, title: str, path: str) -> str:
    """Each true class's row as % of its images, colour bar 0 to 100 %; title above, clear of the bar."""
    import textwrap
    from plotting import _pyplot, _save, titles
    plt = _pyplot()
    confusion = np.array(summary["confusion"], dtype=float)
    rows = 100 * confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    n = len(summary["classes"])
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * n + 2), max(4, 0.45 * n + 1.5)))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=100)
    if n <= 20:
        ax.set_xticks(range(n), summary["classes"], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), summary["classes"], fontsize=8)
        for i in range(n):
            for j in range(n):
                if rows[i, j] >= 0.5:
                    ax.text(j, i, f"{rows[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 50 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    experiment, sep, run = title.partition(" / ")  # "<experiment> / <run>": the experiment in words
    heading = textwrap.fill(titles().get(experiment, experiment) + sep + run,
                            width=int(9 * fig.get_figwidth()))
    ax.set_title(f"{heading}\ntest accuracy {100 * summary['test_acc']:.2f}%", fontsize=10, pad=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("% of the true class")
    return _save(fig, plt, path)


def plot_filters(model, title: str, path: str) -> str:
    """conv1's 96 filters, each scaled to its own range, as in the AlexNet paper's figure 3."""
    from plotting import _pyplot, _save
    plt = _pyplot()
    w = model.conv1.weight.detach().float().numpy()  # 96 x 3 x 11 x 11
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    w = (w - lo) / np.maximum(hi - lo, 1e-12)
    fig, ax = plt.subplots(figsize=(12, 4.8))
    ax.imshow(filter_mosaic(w.transpose(0, 2, 3, 1)), interpolation="nearest")
    ax.axis("off")
    fig.suptitle(f"{title}: conv1 filters")
    return _save(fig, plt, path)


def filter_mosaic(filters: np.ndarray, columns: int = 16, gap: int = 2) -> np.ndarray:
    """N x h x w x 3 filters in [0, 1] laid out as one image, columns to a row, with white gaps
    between them: one picture draws much faster than 96 small axes."""
    n, h, w, c = filters.shape
    rows = -(-n // columns)
    mosaic = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap, c), dtype=filters.dtype)
    for i, f in enumerate(filters):
        r, col = divmod(i, columns)
        mosaic[r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = f
    return mosaic


def plot_mistakes(logits, labels, split, classes: list, title: str, path: str, count: int = 16) -> str:
    """The test images predicted wrong with the highest confidence, with true and predicted names."""
    from plotting import _pyplot, _save
    plt = _pyplot()
    probs = logits.softmax(1)
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:count]
    cols = 4
    fig, axes = plt.subplots(max(1, -(-len(order) // cols)), cols, figsize=(10, 2.8 * max(1, -(-len(order) // cols))),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
        ax.set(xticks=[], yticks=[])  # hidden either way; with none, the titles are placed faster
    images = split.test.images.cpu()
    indices = split.test.indices.cpu()
    for ax, i in zip(axes.flat, order.tolist()):
        img = images[indices[i]].numpy()
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray" if img.shape[0] == 1 else None)
        ax.set_title(f"true {classes[labels[i]]}\npredicted {classes[predicted[i]]} "
                     f"({100 * confidence[i]:.0f}%)", fontsize=8)
    if len(order) == 0:
        axes.flat[0].text(0.5, 0.5, "no wrong predictions", ha="center", va="center")
    fig.suptitle(f"{title}: most confident mistakes")
    return _save(fig, plt, path)


def class_table(summary: dict) -> str:
    confusion = summary["confusion"]
    width = max(len("class"), *(len(c) for c in summary["classes"]))
    lines = [f"{'class'.ljust(width)}  images  accuracy", f"{'-' * width}  ------  --------"]
    for i, name in enumerate(summary["classes"]):
        acc = summary["per_class"][name]
        lines.append(f"{name.ljust(width)}  {sum(confusion[i]):6d}  " + ("       -" if acc is None else
                                                                      f"{100 * acc:7.2f}%"))
    return "\n".join(lines)


def evaluate_checkpoint(path: str, out: str, data_dir=None, device_name=None, precision=None) -> dict:
    """Evaluate one checkpoint on its test split; write its eval JSON and pictures; return the summary."""
    import data
    model, ckpt, device, precision = prepare(path, device_name, precision)
    try:
        logits, labels, dataset, split = predictions(model, ckpt, data_dir, device, precision)
    except data.DataError as err:
        raise InputError(f"the dataset of {path} is not available: {err}") from None
    summary = summarize(logits, labels, ckpt["classes"])
    paths = evaluation_paths(out, ckpt["experiment"], os.path.basename(path)[:-3])
    title = f"{ckpt['experiment']} / {os.path.basename(path)[:-3]}"
    summary.update(checkpoint=os.path.abspath(path), device=str(device), precision=precision,
                   recorded_test_acc=ckpt.get("test_acc"), experiment=ckpt["experiment"], name=ckpt["name"],
                   seed=ckpt["config"].get("seed"), run_id=ckpt.get("run_id"),
                   weights="best" if path.endswith(".best.pt") else "last", data=dataset.source)
    summary["images"] = [plot_confusion(summary, title, paths["confusion"]),
                         plot_filters(model.cpu(), title, paths["filters"]),
                         plot_mistakes(logits, labels, split, ckpt["classes"], title, paths["mistakes"])]
    summary["json"] = paths["json"]
    storage.atomic_write_text(summary["json"], json.dumps(summary, indent=1))
    return summary


def predict_images(path: str, files: list, device_name=None, precision=None, top: int = 5) -> list:
    """[(file, [(class name, probability)] for the top classes)] for each image file."""
    import torch
    from PIL import Image
    import data
    import train
    model, ckpt, device, precision = prepare(path, device_name, precision)
    c = ckpt["config"]
    answers = []
    for file in files:
        try:
            with Image.open(file) as img:
                pixels = np.asarray(img.convert("RGB"))
        except Image.DecompressionBombError:
            raise InputError(f"{file} is too large to decode safely") from None
        except Exception:
            raise InputError(f"{file} is not an image that can be read") from None
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].to(device)  # 1 x 3 x H x W uint8
        with torch.inference_mode(), train.autocast(device, precision):
            probs = model(data.transform_batch(x, c["image_size"])).float().softmax(1)[0].cpu()
        values, indices = probs.topk(min(top, len(probs)))
        answers.append((file, [(ckpt["classes"][i], float(v)) for v, i in zip(values, indices.tolist())]))
    return answers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a models/<experiment>/<run>.pt (or .best.pt) file")
    p.add_argument("--images", nargs="+", metavar="FILE", help="predict these images instead of the test split")
    p.add_argument("--out", default=ROOT, type=storage.out_folder,
                   help="root for results/ and images/ (default: the repository root)")
    p.add_argument("--data-dir", help="where the dataset lives (default: the one the run was trained from)")
    p.add_argument("--device", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="(default: the run's own, so that the accuracy matches the recorded one)")
    args = p.parse_args(argv)
    try:
        if args.images:
            for file, top in predict_images(args.checkpoint, args.images, args.device, args.precision):
                logs.info(f"{file}: " + ", ".join(f"{name} {100 * prob:.1f}%" for name, prob in top))
            return 0
        summary = evaluate_checkpoint(args.checkpoint, args.out, args.data_dir, args.device, args.precision)
    except (InputError, storage.WriteError) as err:
        logs.problem(f"error: {err}")
        return 1
    except (RuntimeError, ValueError, AssertionError) as err:
        if args.device:  # a device that is not there
            from train import unavailable_device
            logs.problem(f"error: device {unavailable_device(args.device, err)}")
            return 1
        raise
    logs.info(f"{summary['checkpoint']}: test accuracy {100 * summary['test_acc']:.2f}% on "
              f"{summary['test_images']} test images from {summary['data']} ({summary['device']}, "
              f"{summary['precision']})")
    logs.info(class_table(summary))
    logs.info(f"\nwritten: {summary['json']}\n         " + "\n         ".join(summary["images"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
