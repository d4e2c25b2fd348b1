"""The fused layers FusedAlexNet is built of: K members' layers of one shape as one module
(as HFTA's ops/, Wang et al., MLSys 2021), each tested against K separate torch layers
(tests/test_fused_layers.py).

    GroupedConv2d, SplitConv2d   input B x (K*C) x H x W (member k's channels k*C ... (k+1)*C - 1),
                                 weight (K*out) x in x kh x kw (member k's rows k*out ... (k+1)*out - 1)
    GroupedLinear, SplitLinear   input K x B x F, weight K x out x in
    OneLinear                    K = 1: the plain layer, whatever the form asked

A grouped form runs the K members in one kernel (a grouped convolution, a batched matmul); a
split form runs K plain ones on views of each member's rows: exactly the arithmetic of each
member alone. A layer's form is its class; in_form gives the same parameters in another form.
The activation, the dropout and the weight penalty are each member's own as well.
"""
import torch
import torch.nn.functional as F
from torch import nn

from core.activations import ACTIVATIONS


def memory_format_of(x: torch.Tensor):
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


# -- convolutions -----------------------------------------------------------------

class FusedConv2d(nn.Module):
    """K convolutions of one shape; member k owns rows k*out ... (k+1)*out - 1 of weight and bias."""
    form = None

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter, k: int, stride: tuple, padding: tuple):
        super().__init__()
        self.weight, self.bias = weight, bias
        self.k, self.stride, self.padding = k, stride, padding

    @classmethod
    def of(cls, convs: list) -> "FusedConv2d":
        """The K members' nn.Conv2d as one layer (cat writes a new tensor: their weights are copied once)."""
        return cls(nn.Parameter(torch.cat([c.weight.detach() for c in convs])),
                   nn.Parameter(torch.cat([c.bias.detach() for c in convs])), len(convs), convs[0].stride,
                   convs[0].padding)

    def member_rows(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """Member k's rows of t (this layer's weight or bias, or its gradient): a view."""
        rows = t.shape[0] // self.k
        return t[k * rows:(k + 1) * rows]

    def in_form(self, form: str) -> "FusedConv2d":
        """This layer, on the same parameters, in form (K = 1: the plain convolution either way)."""
        cls = GroupedConv2d if self.k == 1 else CONV_FORMS[form]
        return cls(self.weight, self.bias, self.k, self.stride, self.padding)


class GroupedConv2d(FusedConv2d):
    """One grouped convolution (groups = K); K = 1 is the plain convolution."""
    form = "grouped"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.k)


class SplitConv2d(FusedConv2d):
    """K plain convolutions, member k's on its own channels and rows, in x's layout."""
    form = "split"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = zip(x.chunk(self.k, 1), self.weight.chunk(self.k), self.bias.chunk(self.k))
        return torch.cat([F.conv2d(xk.contiguous(memory_format=memory_format_of(x)), w, b, self.stride, self.padding)
                          for xk, w, b in parts], 1)


CONV_FORMS = {"grouped": GroupedConv2d, "split": SplitConv2d}


# -- linear layers ----------------------------------------------------------------

class FusedLinear(nn.Module):
    """K linear layers of one shape; member k owns weight[k] and bias[k]."""
    form = None

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter):
        super().__init__()
        self.weight, self.bias = weight, bias
        self.k = weight.shape[0]

    @classmethod
    def of(cls, linears: list) -> "FusedLinear":
        """The K members' nn.Linear as one layer (their weights copied once)."""
        return cls(nn.Parameter(torch.stack([m.weight.detach() for m in linears])),
                   nn.Parameter(torch.stack([m.bias.detach() for m in linears])))

    def member_rows(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """Member k's part of t (this layer's weight or bias, or its gradient): a view."""
        return t[k]

    def in_form(self, form: str) -> "FusedLinear":
        """This layer, on the same parameters, in form (K = 1: the plain layer either way)."""
        cls = OneLinear if self.k == 1 else LINEAR_FORMS[form]
        return cls(self.weight, self.bias)


class GroupedLinear(FusedLinear):
    """One batched matmul for the K members."""
    form = "grouped"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (W x^T + b)^T: the weight's gradient comes out in the weight's own layout, where
        # x W^T would give it transposed and cost a copy of every fc weight per step
        return torch.baddbmm(self.bias.unsqueeze(2), self.weight, x.transpose(1, 2)).transpose(1, 2)


class SplitLinear(FusedLinear):
    """K plain linear layers, member k's on x[k]."""
    form = "split"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.linear(xk.contiguous(), w, b)
                            for xk, w, b in zip(x.unbind(0), self.weight.unbind(0), self.bias.unbind(0))])


class OneLinear(FusedLinear):
    """K = 1: the plain layer, as HFTA runs one model (faster than a batched matmul of one)."""
    form = "grouped"  # both forms are this one at K = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x[0], self.weight.squeeze(0), self.bias.squeeze(0)).unsqueeze(0)


LINEAR_FORMS = {"grouped": GroupedLinear, "split": SplitLinear}


# -- each member's activation, dropout and weight penalty -------------------------

class SameActivation(nn.Module):
    """One activation shared by every member: applied to the whole fused tensor."""

    def __init__(self, name: str):
        super().__init__()
        self.activation = ACTIVATIONS[name]()

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return self.activation(x)

    def of_member(self, k: int) -> nn.Module:
        return self.activation


class MemberActivations(nn.Module):
    """Each member's own activation on its part of x (K parts along dim)."""

    def __init__(self, names: list):
        super().__init__()
        self.activations = nn.ModuleList(ACTIVATIONS[name]() for name in names)

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        parts = x.chunk(len(self.activations), dim)
        return torch.cat([act(part) for act, part in zip(self.activations, parts)], dim)

    def of_member(self, k: int) -> nn.Module:
        return self.activations[k]


def member_activation(names: list) -> nn.Module:
    """The members' activations (by name, one a member) as one layer: forward(x, dim)."""
    return SameActivation(names[0]) if len(set(names)) == 1 else MemberActivations(names)


class MemberDropout(nn.Module):
    """Inverted dropout per member on K x B x F, member k's masks with its own p and drawn from
    its own generator (nothing is dropped in eval mode or at p = 0)."""

    def __init__(self, ps: list, generators: list):
        super().__init__()
        self.ps, self.generators = list(ps), generators

    def mask(self, k: int, part: torch.Tensor, rows: tuple | None = None) -> torch.Tensor | None:
        """Member k's inverted-dropout factors for its part of the input to a linear layer
        (B x F); None where nothing is dropped. rows = (rank, world_size, global batch size)
        where part is this process's share of a data-parallel batch (every world_size-th image
        from rank): the masks of the whole global batch are drawn and this share's rows taken,
        so that every process draws the single-device run's masks instead of the same masks
        for its i-th image."""
        p = self.ps[k]
        if not self.training or p == 0:
            return None
        # drawn in a fixed (contiguous) order, whatever the layout of x: the same masks for any K
        shape = part.shape if rows is None else (rows[2], *part.shape[1:])
        mask = torch.empty(shape, dtype=part.dtype, device=part.device)
        mask = mask.bernoulli_(1 - p, generator=self.generators[k]).div_(1 - p)
        return mask if rows is None else mask[rows[0]::rows[1]]

    def forward(self, x: torch.Tensor, rows: tuple | None = None) -> torch.Tensor:
        masks = [self.mask(k, part, rows) for k, part in enumerate(x)]
        if all(mask is None for mask in masks):
            return x
        return x * torch.stack([torch.ones_like(part) if mask is None else mask for mask, part in zip(masks, x)])


def weight_penalty(params: list, k: int, l1: torch.Tensor | None, l2: torch.Tensor | None) -> torch.Tensor:
    """Per member (K): L1_k * sum(|w|) + L2_k * sum(w^2) over params, each of which holds the
    K members' values as K blocks of rows (None: that term is zero for every member)."""
    total = params[0].new_zeros(k, dtype=torch.float32)
    for p in params:
        rows = p.reshape(k, -1)  # member k's values are one contiguous block of rows
        if l1 is not None:
            total = total + l1 * rows.abs().sum(1)
        if l2 is not None:
            total = total + l2 * rows.pow(2).sum(1)
    return total
