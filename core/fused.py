"""K AlexNets trained as one model: horizontal fusion (HFTA, Wang et al., MLSys 2021).

Every member has AlexNet's layers and shapes (alexnet.py) and its own activation,
dropout p, dropout masks and weights; the fused model holds each layer's K weights
in one tensor, under the same names as AlexNet's state_dict:

    convN.weight  (K*out) x in x kh x kw   member k owns rows k*out ... (k+1)*out - 1,
                                           run as one grouped convolution (groups = K)
    fcN.weight    K x out x in             run as one batched matmul

so a step of K runs costs a few large kernels instead of K times many small ones.
The members never mix: member k's output depends only on its own weights and its
own input channels, and its loss only on its own output, so its gradient is the one
it would have alone. K = 1 is the plain AlexNet, computed by the same code.

Shapes: input B x (K*C) x H x W (member k's batch in channels k*C ... (k+1)*C - 1),
output K x B x classes.

Each fused layer runs in one of two forms, chosen per layer by timing both on the
layer's real shapes, precision and layout (choose_kernels), because the speed of
grouped convolutions varies with the device, the cuDNN version and the layout:
    "grouped"  one grouped convolution / one batched matmul for all K members
    "split"    K plain convolutions / matmuls, one per member, on views of the
               fused weights: exactly the arithmetic of each run alone
so a fused group is never slower per image than its members one at a time.
"""
import time
import torch
import torch.nn.functional as F
from torch import nn

from core.activations import ACTIVATIONS

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")  # strides and paddings: alexnet.py's
POOLED = ("conv1", "conv2", "conv5")
FCS = ("fc1", "fc2", "fc3")
LAYERS = (*CONVS, *FCS)
FORMS = ("grouped", "split")


class FusedAlexNet(nn.Module):
    def __init__(self, members: list, activations: list, dropouts: list, generators: list):
        """members: K AlexNets (their weights are copied in); generators: one per member,
        for its dropout masks."""
        super().__init__()
        self.k = len(members)
        for name in LAYERS:
            layers = [getattr(m, name) for m in members]
            join = torch.cat if name in CONVS else torch.stack
            holder = nn.Module()
            # cat and stack always write a new tensor: the members' own weights are copied once
            holder.weight = nn.Parameter(join([layer.weight.detach() for layer in layers]))
            holder.bias = nn.Parameter(join([layer.bias.detach() for layer in layers]))
            self.add_module(name, holder)
        self.conv_shapes = {name: (getattr(members[0], name).stride, getattr(members[0], name).padding)
                            for name in CONVS}
        self.activations = [ACTIVATIONS[a]() for a in activations]
        self.same_activation = len(set(activations)) == 1
        self.dropouts = list(dropouts)
        self.generators = generators
        self.kernels = {name: "grouped" for name in LAYERS}  # each layer's form (see choose_kernels)
        self._trace = None  # a dict while trace_inputs records each layer's input
        # each member's own leaf tensors over its rows of the fused weights (train.Group sets them):
        # with every layer split, the backward writes each member's gradients straight into them
        self.member_params = None

    @property
    def apart(self) -> bool:
        """Every layer split: the members run one after another, each on its own weights."""
        return self.k > 1 and all(form == "split" for form in self.kernels.values())
    # -- members' views -----------------------------------------------------

    def member_tensors(self, k: int, grads: bool = False) -> dict:
        """Member k's weights (or their gradients) as views into the fused tensors, under
        AlexNet's names and in AlexNet.parameters() order."""
        views = {}
        for name in LAYERS:
            layer = getattr(self, name)
            for part in ("weight", "bias"):
                t = getattr(layer, part)
                t = t.grad if grads else t
                rows = t.shape[0] // self.k
                views[f"{name}.{part}"] = t[k * rows:(k + 1) * rows] if name in CONVS else t[k]
        return views

    def member_state_dict(self, k: int) -> dict:
        """A plain AlexNet state_dict of member k: compact CPU copies (saving a view would
        save every member's weights)."""
        return {n: t.detach().to("cpu", copy=True).contiguous() for n, t in self.member_tensors(k).items()}

    # -- forward ------------------------------------------------------------

    def _act(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Each member's activation on its part of x, split K ways along dim."""
        if self.same_activation:
            return self.activations[0](x)
        parts = x.chunk(self.k, dim)
        return torch.cat([act(part) for act, part in zip(self.activations, parts)], dim)

    def _scale(self, k: int, part: torch.Tensor, rows: tuple | None = None) -> torch.Tensor | None:
        """Member k's inverted-dropout factors for its part of the input to a linear layer
        (B x F), from its own generator; None where nothing is dropped (eval mode, p = 0).
        rows = (rank, world_size, global batch size) where part is this process's share of a
        data-parallel batch (every world_size-th image from rank): the masks of the whole
        global batch are drawn and this share's rows taken, so that every process draws the
        single-device run's masks instead of the same masks for its i-th image."""
        p = self.dropouts[k]
        if not self.training or p == 0:
            return None
        # drawn in a fixed (contiguous) order, whatever the layout of x: the same masks for any K
        shape = part.shape if rows is None else (rows[2], *part.shape[1:])
        mask = torch.empty(shape, dtype=part.dtype, device=part.device)
        mask = mask.bernoulli_(1 - p, generator=self.generators[k]).div_(1 - p)
        return mask if rows is None else mask[rows[0]::rows[1]]

    def _drop(self, x: torch.Tensor, rows: tuple | None = None) -> torch.Tensor:
        """Inverted dropout per member on K x B x F."""
        scales = [self._scale(k, part, rows) for k, part in enumerate(x)]
        if all(scale is None for scale in scales):
            return x
        return x * torch.stack([torch.ones_like(part) if scale is None else scale for scale, part in zip(scales, x)])

    def conv(self, name: str, x: torch.Tensor, form: str | None = None) -> torch.Tensor:
        """Layer name (a convolution) on B x (K*C) x H x W, in its form or the one given."""
        layer, (stride, padding) = getattr(self, name), self.conv_shapes[name]
        if self._trace is not None:
            self._trace[name] = x.detach()
        if self.k == 1 or (form or self.kernels[name]) == "grouped":
            return F.conv2d(x, layer.weight, layer.bias, stride, padding, groups=self.k)
        parts = zip(x.chunk(self.k, 1), layer.weight.chunk(self.k), layer.bias.chunk(self.k))
        return torch.cat([F.conv2d(xk.contiguous(memory_format=_format_of(x)), w, b, stride, padding)
                          for xk, w, b in parts], 1)

    def linear(self, name: str, x: torch.Tensor, form: str | None = None) -> torch.Tensor:
        """Layer name (fully connected) on K x B x F, in its form or the one given."""
        layer = getattr(self, name)
        if self._trace is not None:
            self._trace[name] = x.detach()
        if self.k == 1:  # the plain layer (as HFTA does for one model): measured 3% faster on CPU
            return F.linear(x[0], layer.weight.squeeze(0), layer.bias.squeeze(0)).unsqueeze(0)
        if (form or self.kernels[name]) == "split":
            return torch.stack([F.linear(xk.contiguous(), w, b)
                                for xk, w, b in zip(x.unbind(0), layer.weight.unbind(0), layer.bias.unbind(0))])
        # (W x^T + b)^T: the weight's gradient comes out in the weight's own layout, where
        # x W^T would give it transposed and cost a copy of every fc weight per step
        return torch.baddbmm(layer.bias.unsqueeze(2), layer.weight, x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor, rows: tuple | None = None) -> torch.Tensor:
        """rows: this process's share of a data-parallel batch, for the dropout masks (_scale)."""
        if self.apart:
            return self._apart(x, rows)
        for name in CONVS:
            x = self._act(self.conv(name, x), 1)
            if name in POOLED:
                x = F.max_pool2d(x, 3, 2)
        b = x.shape[0]
        x = x.reshape(b, self.k, -1).transpose(0, 1)  # K x B x (256*s*s), each member's flatten order
        for name in FCS:
            x = self.linear(name, self._drop(x, rows))
            if name != "fc3":
                x = self._act(x, 0)
        return x

    def _apart(self, x: torch.Tensor, rows: tuple | None = None) -> torch.Tensor:
        """Every layer split: each member's whole forward pass on its own input, operation for
        operation AlexNet's (as K runs one at a time, with nothing of the others in between), on
        its own leaf tensors where train.Group made them (no gradient then passes through the
        fused weights), else on views of the fused weights."""
        views = {}
        for name in LAYERS:
            if self.member_params is not None:
                views[name] = ([m[f"{name}.weight"] for m in self.member_params],
                               [m[f"{name}.bias"] for m in self.member_params])
                continue
            layer = getattr(self, name)
            split = (lambda t: t.chunk(self.k)) if name in CONVS else (lambda t: t.unbind(0))
            views[name] = (split(layer.weight), split(layer.bias))
        outputs = []
        for k, h in enumerate(x.chunk(self.k, 1)):
            h = h.contiguous(memory_format=_format_of(x))
            act = self.activations[k]
            for name in CONVS:
                (stride, padding), (w, b) = self.conv_shapes[name], views[name]
                h = act(F.conv2d(h, w[k], b[k], stride, padding))
                if name in POOLED:
                    h = F.max_pool2d(h, 3, 2)
            h = torch.flatten(h, 1)
            for name in FCS:
                scale, (w, b) = self._scale(k, h, rows), views[name]
                h = F.linear(h if scale is None else h * scale, w[k], b[k])
                if name != "fc3":
                    h = act(h)
            outputs.append(h)
        return torch.stack(outputs)

    def trace_inputs(self, x: torch.Tensor) -> dict:
        """Each layer's input for input x, by name (one forward pass without gradients, in eval
        mode: no dropout mask is drawn, so the members' dropout streams stay where they were)."""
        self._trace, was_training, kernels = {}, self.training, self.kernels
        try:
            self.eval()
            self.kernels = {name: "grouped" for name in LAYERS}  # the layer-by-layer path, which records
            with torch.no_grad():
                self(x)
            return self._trace
        finally:
            self._trace, self.kernels = None, kernels
            self.train(was_training)

    # -- the weight penalty -------------------------------------------------

    def penalty(self, l1: torch.Tensor | None, l2: torch.Tensor | None) -> torch.Tensor:
        """Per member (K): L1_k * sum(|w|) + L2_k * sum(w^2) over its weights and biases
        (None: that term is zero for every member)."""
        if self.apart and self.member_params is not None:  # on each member's own leaves, as K = 1 sums
            return torch.cat([_member_penalty(list(m.values()), None if l1 is None else l1[k:k + 1],
                                              None if l2 is None else l2[k:k + 1])
                              for k, m in enumerate(self.member_params)])
        params = list(self.parameters())
        total = params[0].new_zeros(self.k, dtype=torch.float32)
        for p in params:
            rows = p.reshape(self.k, -1)  # member k's values are one contiguous block of rows
            if l1 is not None:
                total = total + l1 * rows.abs().sum(1)
            if l2 is not None:
                total = total + l2 * rows.pow(2).sum(1)
        return total


def _member_penalty(params: list, l1, l2) -> torch.Tensor:
    """One member's penalty (a 1-element tensor) over its own tensors, summed as for K = 1."""
    total = params[0].new_zeros(1, dtype=torch.float32)
    for p in params:
        rows = p.reshape(1, -1)
        if l1 is not None:
            total = total + l1 * rows.abs().sum(1)
        if l2 is not None:
            total = total + l2 * rows.pow(2).sum(1)
    return total


def fuse_inputs(parts: list) -> torch.Tensor:
    """K batches of B x C x H x W -> B x (K*C) x H x W."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _format_of(x: torch.Tensor):
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


# ---------------------------------------------------------------------------
# Kernels by measurement

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
    layer = model.conv if name in CONVS else model.linear
    x = x.detach().requires_grad_(name != "conv1")  # conv1's input needs no gradient in training

    def run():
        with autocast():
            out = layer(name, x, form)
        out.backward(torch.ones_like(out))

    seconds = median_seconds(run, x.device, reps)
    model.zero_grad(set_to_none=True)
    return seconds


_CHOSEN = {}  # (k, input shape, device, dtype of autocast, layout) -> (kernels, timings), per process


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
        for member in model.member_params or []:
            for t in member.values():
                t.grad = None
        for g, state in zip(model.generators, saved):
            if g is not None:
                g.set_state(state)


def choose_kernels(model: FusedAlexNet, x: torch.Tensor, autocast, key=None, timer=time_layer,
                   model_timer=time_model) -> tuple:
    """Time both forms of every layer of model on the inputs x leads to and keep the faster
    per layer; where that is not every layer split, time the whole model with that choice
    against every layer split (the members one at a time) and keep the faster. Sets
    model.kernels and returns (kernels, {layer: {form: seconds}, "whole model": ...}).
    K = 1 has one form. Measured once per key (the shapes, precision and layout) in a process."""
    if model.k == 1:
        return dict(model.kernels), {}
    key = (model.k, tuple(x.shape), str(x.device), _format_of(x), key)
    if key not in _CHOSEN:
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
        _CHOSEN[key] = (kernels, timings)
    kernels, timings = _CHOSEN[key]
    model.kernels = dict(kernels)
    return dict(kernels), timings


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
