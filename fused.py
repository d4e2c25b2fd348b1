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
"""
import torch
import torch.nn.functional as F
from torch import nn

from alexnet import ACTIVATIONS

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")  # strides and paddings: alexnet.py's
POOLED = ("conv1", "conv2", "conv5")
FCS = ("fc1", "fc2", "fc3")
LAYERS = (*CONVS, *FCS)


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
            holder.weight = nn.Parameter(join([layer.weight.detach() for layer in layers]).clone())
            holder.bias = nn.Parameter(join([layer.bias.detach() for layer in layers]).clone())
            self.add_module(name, holder)
        self.conv_shapes = {name: (getattr(members[0], name).stride, getattr(members[0], name).padding)
                            for name in CONVS}
        self.activations = [ACTIVATIONS[a]() for a in activations]
        self.same_activation = len(set(activations)) == 1
        self.dropouts = list(dropouts)
        self.generators = generators

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

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Inverted dropout per member on K x B x F, masks from each member's own generator."""
        if not self.training or not any(self.dropouts):
            return x
        scale = []
        for p, g, part in zip(self.dropouts, self.generators, x):
            if p > 0:
                # drawn in a fixed (contiguous) order, whatever the layout of x: the same masks for any K
                mask = torch.empty(part.shape, dtype=part.dtype, device=part.device)
                scale.append(mask.bernoulli_(1 - p, generator=g).div_(1 - p))
            else:
                scale.append(torch.ones_like(part))
        return x * torch.stack(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, (stride, padding) in self.conv_shapes.items():
            layer = getattr(self, name)
            x = self._act(F.conv2d(x, layer.weight, layer.bias, stride, padding, groups=self.k), 1)
            if name in POOLED:
                x = F.max_pool2d(x, 3, 2)
        b = x.shape[0]
        x = x.reshape(b, self.k, -1).transpose(0, 1)  # K x B x (256*s*s), each member's flatten order
        for name in FCS:
            layer = getattr(self, name)
            if self.k == 1:  # the plain layer (as HFTA does for one model): measured 3% faster on CPU
                x = F.linear(self._drop(x)[0], layer.weight.squeeze(0), layer.bias.squeeze(0)).unsqueeze(0)
            else:  # (W x^T + b)^T: the weight's gradient comes out in the weight's own layout, where
                # x W^T would give it transposed and cost a copy of every fc weight per step
                x = torch.baddbmm(layer.bias.unsqueeze(2), layer.weight,
                                  self._drop(x).transpose(1, 2)).transpose(1, 2)
            if name != "fc3":
                x = self._act(x, 0)
        return x

    # -- the weight penalty -------------------------------------------------

    def penalty(self, l1: torch.Tensor | None, l2: torch.Tensor | None) -> torch.Tensor:
        """Per member (K): L1_k * sum(|w|) + L2_k * sum(w^2) over its weights and biases
        (None: that term is zero for every member)."""
        params = list(self.parameters())
        total = params[0].new_zeros(self.k, dtype=torch.float32)
        for p in params:
            rows = p.reshape(self.k, -1)  # member k's values are one contiguous block of rows
            if l1 is not None:
                total = total + l1 * rows.abs().sum(1)
            if l2 is not None:
                total = total + l2 * rows.pow(2).sum(1)
        return total


def fuse_inputs(parts: list) -> torch.Tensor:
    """K batches of B x C x H x W -> B x (K*C) x H x W."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

