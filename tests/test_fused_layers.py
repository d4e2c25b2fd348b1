"""Each fused layer (core/fused_layers.py) against K separate torch layers on the same inputs
and weights, forward and backward, as HFTA's ops/*_test.py: member k's output, input gradient
and every parameter's gradient are those of member k's own layer. The split form runs each
member's own operation, so it is compared exactly; the grouped form sums the same products in
another order, so within float32's rounding. CPU, float32, small sizes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet import AlexNet
from core.fused import FORMS, LAYERS, FusedAlexNet
from core.fused_layers import (CONV_FORMS, LINEAR_FORMS, FusedConv2d, FusedLinear, MemberActivations, MemberDropout,
                               OneLinear, SameActivation, member_activation, weight_penalty)

K = 3
B = 2
# (in channels, out channels, kernel, stride, padding, image size): AlexNet's three kinds, small
CONV_SHAPES = [(3, 4, 11, 4, 0, 23), (4, 6, 5, 1, 2, 9), (6, 5, 3, 1, 1, 7)]
# (in features, out features), multiples of 8: with B = 2, each member's slice of a stacked input,
# output gradient and weight starts on a 64-byte boundary, as it always does in AlexNet (9216 and
# 4096 features). A CPU's matmul may round differently on a slice that does not (docs/tests.md):
# that is the kernel's choice, not a member's arithmetic.
LINEAR_SHAPES = [(16, 8), (24, 16)]


def check(expected: torch.Tensor, got: torch.Tensor, exact: bool, what: str):
    if exact:
        assert torch.equal(got, expected), what
    else:
        # within 1e-5 of the tensor's largest value: the same float32 products summed in another
        # order differ by a few units in the last place per layer, adding up through the model's
        # layers (docs/tests.md); a member given another's weights, inputs or gradients differs by
        # orders of magnitude more
        scale = float(expected.abs().max())
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale, msg=what)


def convs(k: int, shape: tuple) -> list:
    torch.manual_seed(0)
    c_in, c_out, kernel, stride, padding, _ = shape
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding) for _ in range(k)]


def linears(k: int, shape: tuple) -> list:
    torch.manual_seed(0)
    return [nn.Linear(*shape) for _ in range(k)]


def run_members(layers: list, xs: list) -> tuple:
    """(outputs, the upstream gradients given them) of each member's own layer, backward run."""
    outs = [layer(x) for layer, x in zip(layers, xs)]
    torch.manual_seed(2)
    grads = [torch.randn_like(out) for out in outs]
    torch.autograd.backward(outs, grads)
    return outs, grads


def assert_members(layer, members: list, xs: list, outs: list, x, out, exact: bool, parts):
    """Member k's output and every gradient in the fused layer against its own layer's;
    parts(t, k) is member k's part of a fused input or output."""
    for k, member in enumerate(members):
        check(outs[k].detach(), parts(out.detach(), k), exact, f"output of member {k}")
        check(xs[k].grad, parts(x.grad, k), exact, f"input gradient of member {k}")
        check(member.weight.grad, layer.member_rows(layer.weight.grad, k), exact, f"weight gradient of member {k}")
        check(member.bias.grad, layer.member_rows(layer.bias.grad, k), exact, f"bias gradient of member {k}")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_a_fused_convolution_is_k_convolutions(shape, form, layout):
    members = [conv.to(memory_format=layout) for conv in convs(K, shape)]
    layer = FusedConv2d.of(members).in_form(form).to(memory_format=layout)
    assert type(layer) is CONV_FORMS[form]
    torch.manual_seed(1)
    xs = [torch.randn(B, shape[0], shape[5], shape[5]).contiguous(memory_format=layout).requires_grad_()
          for _ in members]
    outs, grads = run_members(members, xs)
    x = torch.cat([x.detach() for x in xs], 1).contiguous(memory_format=layout).requires_grad_()
    out = layer(x)
    out.backward(torch.cat(grads, 1))
    assert_members(layer, members, xs, outs, x, out, form == "split", lambda t, k: t.chunk(K, 1)[k])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
def test_a_fused_linear_layer_is_k_linear_layers(shape, form):
    members = linears(K, shape)
    layer = FusedLinear.of(members).in_form(form)
    assert type(layer) is LINEAR_FORMS[form]
    torch.manual_seed(1)
    xs = [torch.randn(B, shape[0], requires_grad=True) for _ in members]
    outs, grads = run_members(members, xs)
    x = torch.stack([x.detach() for x in xs]).requires_grad_()
    assert all(x[k].data_ptr() % 64 == 0 for k in range(K))  # the shapes' premise, as in AlexNet
    out = layer(x)
    out.backward(torch.stack(grads))
    assert_members(layer, members, xs, outs, x, out, form == "split", lambda t, k: t[k])


@pytest.mark.parametrize("form", FORMS)
def test_one_member_is_the_plain_layer_exactly(form):
    """K = 1 runs the plain layer in either form: a run alone computes what AlexNet computes."""
    for shape in CONV_SHAPES:
        members = convs(1, shape)
        layer = FusedConv2d.of(members).in_form(form)
        torch.manual_seed(1)
        xs = [torch.randn(B, shape[0], shape[5], shape[5], requires_grad=True)]
        outs, grads = run_members(members, xs)
        x = xs[0].detach().clone().requires_grad_()
        out = layer(x)
        out.backward(grads[0])
        assert_members(layer, members, xs, outs, x, out, True, lambda t, k: t)
    for shape in LINEAR_SHAPES:
        members = linears(1, shape)
        layer = FusedLinear.of(members).in_form(form)
        assert type(layer) is OneLinear
        torch.manual_seed(1)
        xs = [torch.randn(B, shape[0], requires_grad=True)]
        outs, grads = run_members(members, xs)
        x = xs[0].detach().unsqueeze(0).requires_grad_()
        out = layer(x)
        out.backward(grads[0].unsqueeze(0))
        assert_members(layer, members, xs, outs, x, out, True, lambda t, k: t[0])


@pytest.mark.parametrize("names, kind", [(["relu", "tanh", "elu"], MemberActivations),
                                         (["tanh", "tanh", "tanh"], SameActivation)])
def test_each_member_has_its_own_activation(names, kind):
    """On a convolution's output (members along dim 1) and a linear layer's (along dim 0)."""
    layer = member_activation(names)
    assert type(layer) is kind
    modules = [{"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}[name]() for name in names]
    torch.manual_seed(1)
    for shape, dim in (((B, 4, 5, 5), 1), ((B, 6), 0)):
        xs = [torch.randn(*shape, requires_grad=True) for _ in names]
        outs, grads = run_members(modules, xs)
        x = torch.cat([x.detach() for x in xs], dim).requires_grad_()
        out = layer(x, dim)
        out.backward(torch.cat(grads, dim))
        for k in range(K):
            assert torch.equal(out.detach().chunk(K, dim)[k], outs[k].detach()), (k, dim)
            assert torch.equal(x.grad.chunk(K, dim)[k], xs[k].grad), (k, dim)
            assert layer.of_member(k)(xs[k]).equal(outs[k])


def reference_masks(ps: list, seeds: list, shape: tuple) -> list:
    """Member k's inverted-dropout factors drawn from its own generator, as nn.Dropout scales."""
    masks = []
    for p, seed in zip(ps, seeds):
        generator = torch.Generator().manual_seed(seed)
        masks.append(torch.ones(shape) if p == 0 else
                     torch.empty(shape).bernoulli_(1 - p, generator=generator).div_(1 - p))
    return masks


def test_each_member_drops_with_its_own_p_and_generator():
    ps, seeds = [0.25, 0.0, 0.5], [7, 8, 9]
    layer = MemberDropout(ps, [torch.Generator().manual_seed(s) for s in seeds]).train()
    torch.manual_seed(1)
    x = torch.randn(K, 16, 10, requires_grad=True)
    out = layer(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    masks = reference_masks(ps, seeds, (16, 10))
    for k, mask in enumerate(masks):
        assert torch.equal(out.detach()[k], x.detach()[k] * mask), k
        assert torch.equal(x.grad[k], grad[k] * mask), k
    assert set(masks[0].unique().tolist()) == {0.0, torch.tensor(1 / 0.75).item()}  # kept values / (1 - p)
    assert torch.equal(layer.eval()(x.detach()), x.detach())  # nothing dropped in eval mode


def test_a_share_of_a_data_parallel_batch_draws_its_rows_of_the_whole_batchs_masks():
    """rows = (rank, world_size, global batch): rank r's images are every world_size-th of the
    global batch, and so are its masks."""
    ps, seeds = [0.5, 0.3], [3, 4]
    whole = reference_masks(ps, seeds, (5, 6))
    for rank in range(2):
        layer = MemberDropout(ps, [torch.Generator().manual_seed(s) for s in seeds]).train()
        x = torch.ones(2, len(range(rank, 5, 2)), 6)
        out = layer(x, (rank, 2, 5))
        for k in range(2):
            assert torch.equal(out[k], whole[k][rank::2]), (rank, k)


def test_the_weight_penalty_is_each_members_own():
    """L1_k * sum(|w|) + L2_k * sum(w^2) over member k's weights and biases, and its gradient
    on member k's rows alone."""
    members = convs(K, CONV_SHAPES[1])
    layer = FusedConv2d.of(members)
    l1, l2 = torch.tensor([1e-2, 0.0, 3e-2]), torch.tensor([0.5, 0.25, 0.0])
    got = weight_penalty([layer.weight, layer.bias], K, l1, l2)
    got.backward(torch.ones(K))
    for k, member in enumerate(members):
        params = [member.weight, member.bias]
        expected = sum(l1[k] * p.abs().sum() + l2[k] * p.pow(2).sum() for p in params)
        expected.backward()
        torch.testing.assert_close(got[k], expected.detach(), rtol=1e-6, atol=0)
        for fused, own in zip((layer.weight, layer.bias), params):
            assert torch.equal(layer.member_rows(fused.grad, k), own.grad), k
    assert weight_penalty([layer.weight], K, None, None).tolist() == [0.0] * K


@pytest.mark.parametrize("form", FORMS)
def test_the_fused_model_is_k_alexnets(form):
    """The layers together: FusedAlexNet of K AlexNets (each its own activation) against the K
    AlexNets, forward and backward. Every layer split runs each member alone on its own leaves:
    exactly AlexNet's arithmetic."""
    torch.manual_seed(0)
    names = ["relu", "tanh"]
    alexnets = [AlexNet(10, name, image_size=67) for name in names]
    model = FusedAlexNet(alexnets, names, [0.0, 0.0], [None, None])
    model.kernels = {name: form for name in LAYERS}
    torch.manual_seed(1)
    xs = [torch.randn(B, 3, 67, 67, requires_grad=True) for _ in alexnets]
    outs, grads = run_members(alexnets, xs)
    x = torch.cat([x.detach() for x in xs], 1).requires_grad_()
    out = model(x)
    out.backward(torch.stack(grads))
    exact = form == "split"
    for k, alexnet in enumerate(alexnets):
        check(outs[k].detach(), out.detach()[k], exact, f"output of member {k}")
        check(xs[k].grad, x.grad.chunk(2, 1)[k], exact, f"input gradient of member {k}")
        grads_k = ({n: p.grad for n, p in model.member_params[k].items()} if exact
                   else model.member_tensors(k, grads=True))
        for name, p in alexnet.named_parameters():
            check(p.grad, grads_k[name], exact, f"{name} gradient of member {k}")


@pytest.mark.parametrize("form", FORMS)
def test_each_form_runs_the_kernels_it_names(monkeypatch, form):
    """--kernels grouped runs each fused layer of K members as one grouped convolution or one
    batched matmul, split as K plain ones (docs/fused.md): the form a record names is the one
    that ran, whatever the numbers (both forms give the same within rounding)."""
    calls = []
    conv2d, baddbmm, linear = F.conv2d, torch.baddbmm, F.linear
    monkeypatch.setattr(F, "conv2d", lambda *a, **kw: (calls.append(("conv", kw.get("groups", 1))), conv2d(*a, **kw))[1])
    monkeypatch.setattr(torch, "baddbmm", lambda *a, **kw: (calls.append(("bmm", 0)), baddbmm(*a, **kw))[1])
    monkeypatch.setattr(F, "linear", lambda *a, **kw: (calls.append(("linear", 0)), linear(*a, **kw))[1])
    torch.manual_seed(0)
    model = FusedAlexNet([AlexNet(10, "relu", image_size=67) for _ in range(3)], ["relu"] * 3, [0.0] * 3, [None] * 3)
    model.kernels = {name: form for name in LAYERS}
    model(torch.randn(2, 9, 67, 67))
    expected = ([("conv", 3)] * 5 + [("bmm", 0)] * 3 if form == "grouped"
                else [("conv", 1)] * 15 + [("linear", 0)] * 9)
    assert sorted(calls) == sorted(expected), calls
