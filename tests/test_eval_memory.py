"""Evaluation's memory under fusion (issue 29, item 6): a fused group of K runs evaluates about one
evaluation batch per forward whatever K (it repeated the whole batch K times, K copies that neither
--fuse auto's memory bound nor its trial counted), and --fuse auto's trial runs one evaluation
forward at its K, so a K that trains but cannot evaluate is found out of memory there."""
import pytest
import torch

import data
import train
from conftest import run_config
from core.fused import FusedAlexNet


@pytest.fixture(scope="module")
def eval_split(mnist_dir):
    """(dataset, Split): 8 training images in batches of 4, 16 validation and 16 test images
    evaluated in batches of 8."""
    ds = data.load_dataset("mnist", str(mnist_dir), 67, download=False)
    train_idx, val_idx = data.split_indices(len(ds.train_labels), "full", 8, 16)
    split = train.Split(ds, train_idx, val_idx, 16, 4, 67, torch.device("cpu"))
    for loader in (split.train_eval, split.val, split.test):
        loader.batch_size = 8  # smaller than the validation set, so that a batch is split among K
    return ds, split


def inputs_seen(model):
    """The input sizes (images x channels) model's forwards see, in a list filled as they come."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0] * args[0].shape[1]))
    return seen


def test_a_group_of_four_evaluates_no_larger_inputs_than_one_run(eval_split):
    """Each forward of evaluation at K = 4 is no larger than at K = 1 (it was 4 times larger), and
    every member still sees every image: the same weights give the same accuracy as alone."""
    ds, split = eval_split
    alone = train.Group([run_config(seed=0)], ds.num_classes, split.val.device)
    fused = train.Group([run_config(seed=0)] * 4, ds.num_classes, split.val.device)
    fused.choose_kernels(None, "fp32", "split")  # each member's own arithmetic
    sizes = {}
    accuracies = {}
    for k, group in ((1, alone), (4, fused)):
        seen = inputs_seen(group.model)
        accuracies[k] = train.evaluate(group.model, split.val, "fp32")
        sizes[k] = max(seen)
    assert sizes[4] <= sizes[1] == 8 * 3, sizes
    assert accuracies[4] == accuracies[1] * 4


def test_the_fuse_trial_runs_an_evaluation_forward_at_its_k(eval_split, monkeypatch):
    """--fuse auto's trial of K = 2 runs one evaluation forward of the group (eval mode, 2 copies of
    half an evaluation batch), besides its training steps; before, it timed training steps alone."""
    ds, split = eval_split
    forwards = []
    real_forward = FusedAlexNet.forward

    def recording_forward(self, x, *args, **kwargs):
        forwards.append((self.training, x.shape[0], x.shape[1]))
        return real_forward(self, x, *args, **kwargs)

    monkeypatch.setattr(FusedAlexNet, "forward", recording_forward)
    configs = [run_config(seed=0, kernels="split"), run_config(seed=1, kernels="split")]
    assert train.trial_images_per_s(configs, split, ds.num_classes, 1, 1) > 0
    assert (False, 4, 2 * 3) in forwards, forwards
