"""Each fused layer's form by measurement: both forms of every layer of a FusedAlexNet timed
on the group's real shapes, precision and layout, the faster kept per layer (docs/fused.md,
Kernels), and the device waited for around each timing."""
import time

import torch

from core.fused import FORMS, LAYERS, FusedAlexNet
from core.fused_layers import memory_format_of


def pick_kernels(timings: dict) -> dict:
    """{layer: form} from {layer: {form: seconds}}: the faster form of each layer (grouped on a tie)."""
    return {name: min(FORMS, key=lambda form: (t[form], FORMS.index(form))) for name, t in timings.items()}


def median_seconds(run, device, reps: int) -> float:
    """The median seconds of reps calls of run() (after one untimed call), each waited for."""
    times = []
    for i in range(reps + 1):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_layer(model: FusedAlexNet, name: str, x: torch.Tensor, form: str, autocast, reps: int = 3) -> float:
    """Seconds of one forward and backward of layer name in form on input x (the median of reps,
    after one untimed call), as a training step runs it."""
    layer = getattr(model, name).in_form(form)
    x = x.detach().requires_grad_(name != "conv1")  # conv1's input needs no gradient in training

    def run():
        with autocast():
            out = layer(x)
        out.backward(torch.ones_like(out))

    seconds = median_seconds(run, x.device, reps)
    model.zero_grad(set_to_none=True)
    return seconds


def time_model(model: FusedAlexNet, x: torch.Tensor, kernels: dict, autocast, reps: int = 2) -> float:
    """Seconds of one forward and backward of the whole model with kernels (the median of reps,
    after one untimed call); the members' dropout generators are left as they were."""
    saved = [g.get_state() if g is not None else None for g in model.generators]
    previous, model.kernels = model.kernels, dict(kernels)

    def run():
        with autocast():
            out = model(x)
        out.float().sum().backward()

    try:
        return median_seconds(run, x.device, reps)
    finally:
        model.kernels = previous
        model.zero_grad(set_to_none=True)
        for member in model.member_params:
            for t in member.values():
                t.grad = None
        for g, state in zip(model.generators, saved):
            if g is not None:
                g.set_state(state)


def choose_kernels(model: FusedAlexNet, x: torch.Tensor, autocast, key=None, timer=time_layer,
                   model_timer=time_model, chosen: dict | None = None) -> tuple:
    """Time both forms of every layer of model on the inputs x leads to and keep the faster
    per layer; where that is not every layer split, time the whole model with that choice
    against every layer split (the members one at a time) and keep the faster. Sets
    model.kernels and returns (kernels, {layer: {form: seconds}, "whole model": ...}).
    K = 1 has one form. chosen: the choices made so far, by the shapes, precision and layout
    (and key); a choice found there is taken without timing, a new one is added to it."""
    if model.k == 1:
        return dict(model.kernels), {}
    chosen = {} if chosen is None else chosen
    key = (model.k, tuple(x.shape), str(x.device), memory_format_of(x), key)
    if key not in chosen:
        chosen[key] = _measured_kernels(model, x, autocast, timer, model_timer)
    kernels, timings = chosen[key]
    model.kernels = dict(kernels)
    return dict(kernels), timings


def _measured_kernels(model: FusedAlexNet, x: torch.Tensor, autocast, timer, model_timer) -> tuple:
    """(kernels, timings) for choose_kernels, by timing (in training mode, as a step runs)."""
    inputs = model.trace_inputs(x)
    was_training = model.training
    model.train()
    timings = {name: {form: timer(model, name, inputs[name], form, autocast) for form in FORMS}
               for name in LAYERS}
    kernels = pick_kernels(timings)
    apart = {name: "split" for name in LAYERS}
    if kernels != apart:  # the per-layer choice against the members one at a time, whole
        whole = {"per layer": model_timer(model, x, kernels, autocast),
                 "all split": model_timer(model, x, apart, autocast)}
        timings["whole model"] = whole
        kernels = kernels if whole["per layer"] < whole["all split"] else apart
    model.train(was_training)
    return kernels, timings


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA, MPS: both run ahead of the host); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
