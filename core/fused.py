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

Each fused layer (core/fused_layers.py) runs in one of two forms, chosen per layer by
timing both on the layer's real shapes, precision and layout (core/kernels.py), because
the speed of grouped convolutions varies with the device, the cuDNN version and the layout:
    "grouped"  one grouped convolution / one batched matmul for all K members
    "split"    K plain convolutions / matmuls, one per member, on views of the
               fused weights: exactly the arithmetic of each run alone
so a fused group is never slower per image than its members one at a time. With every
layer split the members run one after another, each on its own leaf tensors.
"""
import torch
import torch.nn.functional as F
from torch import nn

from core.fused_layers import (FusedConv2d, FusedLinear, MemberDropout, member_activation, memory_format_of,
                               weight_penalty)

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")  # strides and paddings: alexnet.py's
POOLED = ("conv1", "conv2", "conv5")
FCS = ("fc1", "fc2", "fc3")
LAYERS = (*CONVS, *FCS)
FORMS = ("grouped", "split")


class FusedAlexNet(nn.Module):
    def __init__(self, members: list, activations: list, dropouts: list, generators: list):
        """members: K AlexNets (their weights are copied in); generators: one per member,
        for its dropout masks. Every layer starts grouped (see kernels)."""
        super().__init__()
        self.k = len(members)
        for name in CONVS:
            self.add_module(name, FusedConv2d.of([getattr(m, name) for m in members]).in_form("grouped"))
        for name in FCS:
            self.add_module(name, FusedLinear.of([getattr(m, name) for m in members]).in_form("grouped"))
        self.activation = member_activation(activations)
        self.dropout = MemberDropout(dropouts, generators)
        self.member_params = self._member_leaves()

    def _apply(self, fn, *args, **kwargs):
        # moving or converting the model gives the fused weights new storage: the members'
        # leaves are made again over it
        super()._apply(fn, *args, **kwargs)
        self.member_params = self._member_leaves()
        return self

    def _member_leaves(self) -> list:
        """Each member's own leaf tensors over its rows of the fused weights (by AlexNet's names):
        its optimizer's parameters; with every layer split, the backward writes each member's
        gradients straight into them."""
        return [{name: nn.Parameter(t.detach()) for name, t in self.member_tensors(k).items()}
                for k in range(self.k)]

    @property
    def generators(self) -> list:
        """Each member's generator of its dropout masks."""
        return self.dropout.generators

    @property
    def kernels(self) -> dict:
        """Each layer's form by name: "grouped" or "split" (see core/kernels.py)."""
        return {name: getattr(self, name).form for name in LAYERS}

    @kernels.setter
    def kernels(self, forms: dict) -> None:
        for name, form in forms.items():
            setattr(self, name, getattr(self, name).in_form(form))

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
                views[f"{name}.{part}"] = layer.member_rows(t.grad if grads else t, k)
        return views

    def member_state_dict(self, k: int) -> dict:
        """A plain AlexNet state_dict of member k: compact CPU copies (saving a view would
        save every member's weights)."""
        return {n: t.detach().to("cpu", copy=True).contiguous() for n, t in self.member_tensors(k).items()}

    # -- forward ------------------------------------------------------------

    def forward(self, x: torch.Tensor, rows: tuple | None = None) -> torch.Tensor:
        """rows: this process's share of a data-parallel batch, for the dropout masks
        (MemberDropout.mask)."""
        if self.apart:
            return torch.stack([self._member_alone(k, h.contiguous(memory_format=memory_format_of(x)), rows)
                                for k, h in enumerate(x.chunk(self.k, 1))])
        for name in CONVS:
            x = self.activation(getattr(self, name)(x), 1)
            if name in POOLED:
                x = F.max_pool2d(x, 3, 2)
        b = x.shape[0]
        x = x.reshape(b, self.k, -1).transpose(0, 1)  # K x B x (256*s*s), each member's flatten order
        for name in FCS:
            x = getattr(self, name)(self.dropout(x, rows))
            if name != "fc3":
                x = self.activation(x, 0)
        return x

    def _member_alone(self, k: int, h: torch.Tensor, rows: tuple | None) -> torch.Tensor:
        """Member k's whole forward pass on its own input h, operation for operation AlexNet's
        (as its run alone, with nothing of the others in between), on its own leaf tensors (no
        gradient then passes through the fused weights)."""
        params, act = self.member_params[k], self.activation.of_member(k)
        for name in CONVS:
            conv = getattr(self, name)
            h = act(F.conv2d(h, params[f"{name}.weight"], params[f"{name}.bias"], conv.stride, conv.padding))
            if name in POOLED:
                h = F.max_pool2d(h, 3, 2)
        h = torch.flatten(h, 1)
        for name in FCS:
            scale = self.dropout.mask(k, h, rows)
            h = F.linear(h if scale is None else h * scale, params[f"{name}.weight"], params[f"{name}.bias"])
            if name != "fc3":
                h = act(h)
        return h

    def trace_inputs(self, x: torch.Tensor) -> dict:
        """Each layer's input for input x, by name (one forward pass without gradients, in eval
        mode: no dropout mask is drawn, so the members' dropout streams stay where they were)."""
        inputs, was_training, kernels = {}, self.training, self.kernels
        try:
            self.eval()
            self.kernels = {name: "grouped" for name in LAYERS}  # the layer-by-layer path, whose layers record
            for name in LAYERS:
                getattr(self, name).register_forward_pre_hook(
                    lambda layer, args, name=name: inputs.__setitem__(name, args[0].detach()))
            with torch.no_grad():
                self(x)
            return inputs
        finally:
            self.kernels = kernels  # fresh layers, without the hooks
            self.train(was_training)

    # -- the weight penalty -------------------------------------------------

    def penalty(self, l1: torch.Tensor | None, l2: torch.Tensor | None) -> torch.Tensor:
        """Per member (K): L1_k * sum(|w|) + L2_k * sum(w^2) over its weights and biases
        (None: that term is zero for every member)."""
        if self.apart:  # on each member's own leaves, as K = 1 sums
            return torch.cat([weight_penalty(list(m.values()), 1, None if l1 is None else l1[k:k + 1],
                                             None if l2 is None else l2[k:k + 1])
                              for k, m in enumerate(self.member_params)])
        return weight_penalty(list(self.parameters()), self.k, l1, l2)


def fuse_inputs(parts: list) -> torch.Tensor:
    """K batches of B x C x H x W -> B x (K*C) x H x W."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
