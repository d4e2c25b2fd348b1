"""The GPU paths, checked on a CPU (issue 16): the precision rule for the GPUs people
have, fp16 with a gradient scaler per fused member, both kernel forms of every fused
layer, out-of-memory splitting of a group, K and kernels chosen by measurement (with
injected timings). The one-command GPU check: test_gpu_check.py."""
import pytest
import torch
import torch.nn.functional as F

import data
from core import fused
from core import kernels as choosing
import sweep
import train
import core.device
from core import fuse_k
from alexnet import AlexNet
from conftest import load_results, one_batch, run_config, run_script, tiny_argv
from core.fused import FusedAlexNet


@pytest.fixture(scope="module")
def tiny_split(mnist_dir):
    """(dataset, Split): 8 training images in batches of 4 (two steps an epoch, as 32 in batches
    of 16 gave, each about a third cheaper), 16 validation and 16 test images. The
    configs say batch 16 (run_config); what trains is the Split's batches."""
    ds = data.load_dataset("mnist", str(mnist_dir), 67, download=False)
    train_idx, val_idx = data.split_indices(len(ds.train_labels), "full", 8, 16)
    return ds, train.Split(ds, train_idx, val_idx, 16, 4, 67, torch.device("cpu"))


# -- precision by capability --------------------------------------------------------------

@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((8, 6), "bf16"),
                                                  ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 1), "fp32")])
def test_precision_by_cuda_capability(capability, expected):
    """H100 9.0, A100 8.0, RTX 3090 8.6: bf16; T4 7.5, V100 7.0: fp16 (bf16 only emulated
    there); P100-class 6.x: fp32."""
    assert core.device.precision_for("cuda", capability) == expected


def test_precision_on_cpus_and_mps():
    assert core.device.precision_for("cpu", None, native_bf16_cpu=True) == "bf16"
    assert core.device.precision_for("cpu", None, native_bf16_cpu=False) == "fp32"
    assert core.device.precision_for("mps") == "fp32"


def test_auto_precision_reads_the_cuda_capability(monkeypatch):
    """resolve_precision asks the device for its capability, never is_bf16_supported (true on
    a T4 through emulation)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert core.device.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert core.device.resolve_precision("bf16", torch.device("cuda")) == "bf16"


# -- both kernel forms --------------------------------------------------------------------

def test_grouped_and_split_forms_of_every_layer_agree():
    """Forward and every gradient of each fused layer, grouped against split, within 1e-5 in fp32
    (relative to the tensor's largest value: the two forms sum in different orders)."""
    torch.manual_seed(0)
    k = 3
    model = FusedAlexNet([AlexNet(10, image_size=67) for _ in range(k)], ["relu"] * k, [0.0] * k, [None] * k)
    inputs = model.trace_inputs(torch.randn(4, 3 * k, 67, 67))
    for name in fused.LAYERS:
        results = {}
        for form in fused.FORMS:
            x = inputs[name].clone().requires_grad_()
            out = getattr(model, name).in_form(form)(x)
            out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
            layer = getattr(model, name)
            results[form] = (out.detach(), x.grad, layer.weight.grad.clone(), layer.bias.grad.clone())
            model.zero_grad(set_to_none=True)
        for a, b in zip(results["grouped"], results["split"]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(a.abs().max()), msg=name)
        if name == "conv1":  # split is each member's plain convolution, exactly (grouped differs here)
            layer, x = model.conv1, inputs["conv1"]
            plain = torch.cat([F.conv2d(x[:, 3 * j:3 * j + 3].contiguous(), layer.weight[96 * j:96 * j + 96],
                                        layer.bias[96 * j:96 * j + 96], 4, 0) for j in range(k)], 1)
            assert torch.equal(results["split"][0], plain.detach())


def test_split_kernels_make_each_fused_run_its_run_alone_exactly(tiny_split):
    """With split kernels a member computes what its run alone computes, operation for
    operation, so the histories are equal, not only close."""
    ds, split = tiny_split
    configs = [run_config(lr=1e-4, seed=0, kernels="split"), run_config(lr=3e-4, dropout=0.3, seed=1,
                                                                         activation="tanh", kernels="split")]
    fused_runs = train.train_group(configs, split, ds.num_classes)
    for f, c in zip(fused_runs, configs):
        alone = train.train_run(c, split, ds.num_classes)
        assert f["history"] == alone["history"] and f["test_acc"] == alone["test_acc"]
        assert f["kernels"]["kernels"] == {name: "split" for name in fused.LAYERS}


def test_kernels_are_chosen_by_the_timings():
    """auto keeps, per layer, the form an injected timing table says is faster, then keeps that
    choice or every layer split, whichever the injected whole-model timing says is faster."""
    k = 2
    model = FusedAlexNet([AlexNet(10, image_size=67) for _ in range(k)], ["relu"] * k, [0.0] * k, [None] * k)
    faster = {name: "split" if i % 2 else "grouped" for i, name in enumerate(fused.LAYERS)}
    timer = lambda model, name, x, form, autocast: 1.0 if form == faster[name] else 2.0
    x = torch.randn(2, 3 * k, 67, 67)
    autocast = lambda: train.autocast(torch.device("cpu"), "fp32")
    kernels, timings = choosing.choose_kernels(model, x, autocast, key="table-1", timer=timer,
                                               model_timer=lambda m, x, kernels, a: 1.0 if kernels == faster else 2.0)
    assert kernels == faster == model.kernels and not model.apart
    assert timings["conv1"] == {"grouped": 1.0, "split": 2.0}
    assert timings["whole model"] == {"per layer": 1.0, "all split": 2.0}
    kernels, _ = choosing.choose_kernels(model, x, autocast, key="table-2", timer=timer,
                                         model_timer=lambda m, x, kernels, a: 2.0 if kernels == faster else 1.0)
    assert kernels == {name: "split" for name in fused.LAYERS} and model.apart
    assert choosing.pick_kernels({"fc1": {"grouped": 3.0, "split": 3.0}}) == {"fc1": "grouped"}


# -- fp16 with a scaler per member --------------------------------------------------------

class _BlowUp(torch.autograd.Function):
    """Identity forward; backward makes member `member`'s gradients overflow."""

    @staticmethod
    def forward(ctx, logits, member):
        ctx.member = member
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[ctx.member] *= float("inf")
        return grad, None


def fp16(**changes):
    return run_config(precision="fp16", kernels="split", epochs=1, **changes)


@pytest.fixture
def scalers_without_half(monkeypatch):
    """fp16 runs with their gradient scalers, their arithmetic in fp32: what is tested here is
    each member's scaling and skipping, and fp16 autocast takes about 20x fp32's time on a CPU
    (one real fp16 run: tests/test_precision_compile.py)."""
    monkeypatch.setattr(train, "autocast", lambda device, precision: torch.autocast(device.type, enabled=False))


def test_fp16_gives_each_fused_member_its_run_alone(tiny_split, scalers_without_half):
    """Each member has its own scaler, so its steps (and skipped steps) are its own: with split
    kernels its history equals the run alone exactly, as the same operations run in the same
    order on the same numbers."""
    ds, split = tiny_split
    configs = [fp16(lr=1e-4, seed=0), fp16(lr=1e-3, seed=1, dropout=0.2)]
    fused_runs = train.train_group(configs, split, ds.num_classes)
    for f, c in zip(fused_runs, configs):
        alone = train.train_run(c, split, ds.num_classes)
        assert f["status"] == alone["status"] == "completed"
        assert f["history"] == alone["history"] and f["test_acc"] == alone["test_acc"]


def test_a_member_whose_fp16_gradients_overflow_leaves_the_others_unchanged(tiny_split, monkeypatch,
                                                                           scalers_without_half):
    """Member 1's gradients overflow at every step: only its steps are skipped and its scale
    shrinks; member 0 trains as it does alone. Once its scale falls below MIN_LOSS_SCALE it
    is recorded diverged, as a non-finite loss is."""
    ds, split = tiny_split
    configs = [fp16(seed=0), fp16(seed=1)]
    group = train.Group(configs, ds.num_classes, torch.device("cpu"))
    group.choose_kernels(None, "fp16", "split")
    before = {n: t.clone() for n, t in group.model.member_state_dict(1).items()}
    step = group.make_step("fp16", lambda x: _BlowUp.apply(group.model(x), 1))
    train.train_one_epoch(step, group.model, split.train, [0, 1], 0, "", False)
    alone = train.Group(configs[:1], ds.num_classes, torch.device("cpu"))
    train.train_one_epoch(alone.make_step("fp16"), alone.model, split.train, [0], 0, "", False)
    assert group.scalers[1].get_scale() == 65536.0 * 0.5 ** len(split.train)
    for name, tensor in group.model.member_state_dict(1).items():
        assert torch.equal(tensor, before[name]), name  # every step skipped
    for name, tensor in alone.model.member_state_dict(0).items():
        assert torch.equal(group.model.member_state_dict(0)[name], tensor), name
    assert group.scalers[0].get_scale() == alone.scalers[0].get_scale()

    real = FusedAlexNet.forward
    monkeypatch.setattr(FusedAlexNet, "forward", lambda self, x: _BlowUp.apply(real(self, x), 1) if self.k == 2
                        else real(self, x))
    monkeypatch.setattr(train, "MIN_LOSS_SCALE", 65536.0)  # any overflow counts: 2 steps an epoch are few
    records = train.train_group(configs, split, ds.num_classes)
    assert records[1]["status"] == "diverged" and records[1]["epochs_completed"] == 0
    monkeypatch.setattr(FusedAlexNet, "forward", real)
    monkeypatch.setattr(train, "MIN_LOSS_SCALE", 1.0)
    reference = train.train_run(configs[0], split, ds.num_classes)
    assert records[0]["status"] == "completed" and records[0]["history"] == reference["history"]


def test_fp16_with_fusion_trains_from_the_command_line(mnist_dir, tmp_path, scalers_without_half):
    """Grouped kernels, given: the fp16 tests above train split, and what auto's timing would
    pick is not the subject here. One training batch of 4, 4 validation and 4 test images: no
    number is compared here."""
    code, out, err = run_script("main_learning_rate", ["--values", "1e-4", "1e-3", *tiny_argv(mnist_dir, tmp_path),
                                                       "--fuse", "2", "--precision", "fp16", "--kernels", "grouped",
                                                       "--train-size", "4", "--batch-size", "4", "--val-size", "4",
                                                       "--test-size", "4"])
    assert code == 0, err
    assert "fused: 2 runs at once" in out
    runs = load_results(tmp_path, "learning_rate")["runs"]
    assert [r["status"] for r in runs] == ["completed"] * 2
    assert all(r["config"]["precision"] == "fp16" and r["config"]["kernels"] == "grouped" for r in runs)


# -- out of memory ------------------------------------------------------------------------

def oom_in_group_of(monkeypatch, size, at_epoch, always=False):
    """train_one_epoch raises an out-of-memory error in a group of size runs at epoch at_epoch
    (0-based) once, or every time."""
    real, raised = train.train_one_epoch, []

    def epoch(step, model, loader, seeds, e, *args):
        if len(seeds) == size and e == at_epoch and (always or not raised):
            raised.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(step, model, loader, seeds, e, *args)

    monkeypatch.setattr(train, "train_one_epoch", epoch)
    return raised


@pytest.mark.slow
def test_out_of_memory_splits_the_group_and_every_run_completes(mnist_dir, tmp_path, monkeypatch):
    # one training batch of 4 an epoch; finished runs keep no weights (they change no number)
    values = ["--values", "1e-4", "2e-4", "5e-4", "1e-3", "--fuse", "4", "--kernels", "split", "--train-size", "4",
              "--batch-size", "4", "--save", "none"]
    # the reference's numbers only: no resume files either
    code, _, err = run_script("main_learning_rate", [*tiny_argv(mnist_dir, tmp_path / "whole", epochs=2), *values,
                                                     "--checkpoint-seconds", "1e9"])
    assert code == 0, err
    reference = {r["name"]: r for r in load_results(tmp_path / "whole", "learning_rate")["runs"]}
    raised = oom_in_group_of(monkeypatch, 4, at_epoch=1)
    # resume files after epoch 1 (tiny_argv: --checkpoint-seconds 0): the halves go on from them
    code, out, err = run_script("main_learning_rate", [*tiny_argv(mnist_dir, tmp_path / "oom", epochs=2), *values])
    assert code == 0, err
    assert raised and "out of memory with 4 runs fused" in out and "going on as 2 + 2" in out
    assert out.count("resuming from epoch 2 of 2") == 4  # each half from its runs' epoch-1 resume files
    runs = {r["name"]: r for r in load_results(tmp_path / "oom", "learning_rate")["runs"]}
    assert runs.keys() == reference.keys()
    for name, run in runs.items():
        assert run["status"] == "completed"
        assert run["history"] == reference[name]["history"] and run["test_acc"] == reference[name]["test_acc"]
        assert len(run["fused_with"]) == 1  # it finished in a group of 2


def test_a_single_run_that_does_not_fit_fails_in_one_sentence(mnist_dir, tmp_path, monkeypatch):
    oom_in_group_of(monkeypatch, 1, at_epoch=0, always=True)
    code, out, err = run_script("main_learning_rate", ["--values", "1e-4", *tiny_argv(mnist_dir, tmp_path)])
    assert code == 1
    (run,) = load_results(tmp_path, "learning_rate")["runs"]
    assert run["status"] == "failed" and "--batch-size" in run["error"] and "Traceback" not in err
    assert "lr_0.0001: failed (out of memory (" in err and "one run at batch 16 and 67 px does not fit" in err


# -- K by measurement ---------------------------------------------------------------------

def test_pick_fuse_takes_the_fastest_k_by_a_clear_margin():
    assert fuse_k.pick_fuse({1: 100.0, 2: 180.0, 4: 170.0}) == 2
    assert fuse_k.pick_fuse({1: 100.0, 2: 104.0, 4: 103.0}) == 1  # not 5% faster
    assert fuse_k.pick_fuse({1: 100.0, 2: 90.0, 4: 80.0}) == 1  # fusion slower: one run at a time
    assert fuse_k.pick_fuse({1: 100.0, 2: 150.0, 4: None}) == 2  # 4 ran out of memory
    assert fuse_k.fuse_candidates(5, 16) == [1, 2, 4] and fuse_k.fuse_candidates(15, 3) == [1, 2]
    assert fuse_k.fuse_candidates(1, 16) == [1] and fuse_k.fuse_candidates(0, 16) == [1]
    assert fuse_k.fuse_candidates(64, 64)[-1] == min(64, fuse_k.MAX_AUTO_FUSE)
    assert fuse_k.fuse_candidates(8, 16) == [1, 2, 4, 8] and fuse_k.fuse_candidates(9, 7) == [1, 2, 4]


def test_the_search_stops_at_the_first_k_out_of_memory():
    asked = []

    def measure(k):
        asked.append(k)
        if k == 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return {1: 10.0, 2: 30.0}[k]

    assert fuse_k.measure_fuse([1, 2, 4, 8], measure) == {1: 10.0, 2: 30.0, 4: None}
    assert asked == [1, 2, 4]


def test_fuse_auto_takes_the_k_an_injected_timing_table_says_is_fastest(mnist_dir, tmp_path, monkeypatch):
    table = {1: 100.0, 2: 250.0, 4: 240.0}
    monkeypatch.setattr(train, "trial_images_per_s", lambda configs, *a: table[len(configs)])
    monkeypatch.setattr(fuse_k, "SEARCH_SHARE", 20.0)  # let a tiny sweep pay for the search
    # one training batch of 4 a run, 4 validation and 4 test images: what is tested is the K chosen, not
    # the training (the search's cost, 47 batches, still within 20x the sweep's 4 runs of one batch each)
    code, out, err = run_script("main_activation", ["--values", "relu", "tanh", "elu", "gelu",
                                                    *tiny_argv(mnist_dir, tmp_path, extra=[
                                                        "--kernels", "split", "--train-size", "4", "--batch-size",
                                                        "4", "--val-size", "4", "--test-size", "4"])])
    assert code == 0, err
    assert "--fuse auto: K = 2" in out and "fused: 2 + 2 runs at once (--fuse auto, 2 chosen)" in out
    for run in load_results(tmp_path, "activation")["runs"]:
        fuse = run["trained_on"]["fuse"]
        assert fuse["chosen"] == 2 and [m["images_per_s"] for m in fuse["measured"]] == [100.0, 250.0, 240.0]


def test_fuse_auto_on_a_sweep_too_small_to_time_trains_one_run_at_a_time(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "trial_images_per_s", lambda *a: pytest.fail("a tiny sweep must not be timed"))
    # one training batch of 4 a run, 4 validation and 4 test images (timing K = 1, 2 would still cost
    # 19 batches, 950% of the sweep's 2: too small to time): the search's cost as docs/fused.md states
    # it, (2 + 3) batches for K = 1 and (2 + 3 + 2) x K for K > 1, the last 2 timing the kernels
    code, out, err = run_script("main_activation", ["--values", "relu", "tanh",
                                                    *tiny_argv(mnist_dir, tmp_path, extra=[
                                                        "--train-size", "4", "--batch-size", "4", "--val-size", "4",
                                                        "--test-size", "4"])])
    assert code == 0, err
    assert "timing K = 1, 2 would cost 950% of this sweep's training, more than 3%; training one run at a time" in out
    assert all(r["fused_with"] == [] for r in load_results(tmp_path, "activation")["runs"])


def test_a_trial_measures_real_training_steps(tiny_split):
    ds, split = tiny_split
    assert train.trial_images_per_s([run_config(seed=0), run_config(seed=1)], split, ds.num_classes, 1, 1) > 0


def groups_alive_when_built(monkeypatch) -> list:
    """For each train.Group built from now on, whether each group built before it is still
    alive (held by a weak reference to its model) at that moment."""
    import weakref
    models, alive_when_built = [], []
    real_init = train.Group.__init__

    def init(self, *args, **kwargs):
        alive_when_built.append([ref() is not None for ref in models])
        real_init(self, *args, **kwargs)
        models.append(weakref.ref(self.model))
    monkeypatch.setattr(train.Group, "__init__", init)
    return alive_when_built


def test_the_failed_group_is_freed_before_either_half_is_built(mnist_dir, tmp_path, monkeypatch):
    """Out of memory in a fused group: its weights, gradients and optimizer states are gone
    before the first half builds its own group (issue 29: the halves trained inside the except
    block, whose traceback kept the failed group's frames alive, so on a real GPU each half would
    have run beside the whole group and most likely out of memory again)."""
    alive_when_built = groups_alive_when_built(monkeypatch)
    oom_in_group_of(monkeypatch, 2, at_epoch=0)
    code, out, err = run_script("main_learning_rate", ["--values", "1e-4", "2e-4", "--fuse", "2", "--kernels", "split",
                                                       "--save", "none", *one_batch(tiny_argv(mnist_dir, tmp_path))])
    assert code == 0, err
    assert "going on as 1 + 1" in out and len(alive_when_built) == 3
    assert alive_when_built[1] == [False], "the failed group of 2 was still alive when the first half was built"


def test_a_group_a_member_leaves_is_freed_before_the_smaller_group_is_built(mnist_dir, tmp_path, monkeypatch):
    """A member that diverges leaves its fused group; the group without it is built only once the
    old one (its weights, gradients, optimizers) is gone (issue 29: both were alive at once, and a
    group near the memory limit could run out of memory exactly when a run diverged)."""
    alive_when_built = groups_alive_when_built(monkeypatch)
    code, out, err = run_script("main_optimizer", ["--values", "sgd:1e12", "adam:1e-4", "--fuse", "2", "--kernels",
                                                   "split", "--save", "none",
                                                   *one_batch(tiny_argv(mnist_dir, tmp_path, epochs=2))])
    assert code == 0, err
    runs = {r["name"]: r["status"] for r in load_results(tmp_path, "optimizer")["runs"]}
    assert runs == {"sgd_lr1e+12": "diverged", "adam_lr0.0001": "completed"} and len(alive_when_built) == 2
    assert alive_when_built[1] == [False], "the group of 2 was still alive when the group of 1 was built"


@pytest.mark.parametrize("text, is_oom", [
    ("CUDA out of memory. Tried to allocate 2.00 GiB", True),
    ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
     "9437184000 bytes. Error code 12 (Cannot allocate memory)", True),
    ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", True),
    ("cuDNN error: CUDNN_STATUS_ALLOC_FAILED", True),
    ("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR", False),  # also real faults: not split (docs/fused.md)
    ("CUDA error: an illegal memory access was encountered", False),
    ("mat1 and mat2 shapes cannot be multiplied (16x9216 and 4096x10)", False),
])
def test_which_errors_count_as_out_of_memory(text, is_oom):
    assert core.device.out_of_memory(RuntimeError(text)) is is_oom
    assert core.device.out_of_memory(ValueError(text)) is False  # only the runtime's errors


@pytest.mark.parametrize("device, capability, native_bf16_cpu, recorded, chosen", [
    ("cuda:0", (8, 0), False, "bf16", "bf16"),  # an A100's run on an A100
    ("cuda:0", (7, 5), False, "bf16", "fp16"),  # an A100's run on a T4: bf16 only emulated there
    ("cuda:0", (7, 0), False, "fp16", "fp16"),
    ("cuda:0", (8, 0), False, "fp16", "fp16"),  # a V100's fp16 run on an A100: fp16 is native there too
    ("cuda:0", (6, 1), False, "fp16", "fp32"),  # a P100 has no fp16 tensor cores
    ("cuda:0", (6, 1), False, "fp32", "fp32"),
    ("cpu", None, True, "bf16", "bf16"),
    ("cpu", None, False, "bf16", "fp32"),  # a CPU without AVX512-BF16 or AMX
    ("cpu", None, False, "fp16", "fp32"),
])
def test_evaluate_uses_the_recorded_precision_only_where_the_device_has_it(monkeypatch, capsys, device, capability,
                                                                          native_bf16_cpu, recorded, chosen):
    """evaluate.py reproduces a run's accuracy in the run's own precision where the device
    computes it natively, and otherwise in the device's own (issue 29), saying so."""
    import evaluate
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(core.device, "cpu_has_native_bf16", lambda: native_bf16_cpu)
    assert evaluate.own_precision(recorded, torch.device(device)) == chosen
    said = capsys.readouterr().out
    assert (f"trained in {recorded}" in said and f"evaluating in {chosen}" in said) == (chosen != recorded)


def test_free_memory_on_a_gpu_is_that_gpu_s_free_memory(monkeypatch):
    """--fuse auto bounds K by the free memory of the device it trains on: on CUDA, what
    torch.cuda.mem_get_info says is free on that device (not its total, not another GPU's)."""
    asked = []

    def mem_get_info(device=None):
        asked.append(str(device))
        return (3 * 2**30, 16 * 2**30) if str(device) == "cuda:1" else (1 * 2**30, 16 * 2**30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert fuse_k.free_memory(torch.device("cuda:1")) == 3 * 2**30 and asked == ["cuda:1"]
