"""Each fused layer against K separate torch layers on the same inputs and weights, forward
and backward (as HFTA's ops/*_test.py): the output, the input's gradient and every
parameter's gradient of member k are member k's layer's own. The split form runs each
member's own operation, so it is compared exactly; the grouped form sums in another order,
so within float32's rounding. CPU, float32, small sizes."""
import pytest
import torch
from torch import nn

from alexnet import AlexNet
from core.fused import CONVS, FCS, FORMS, FusedAlexNet

K = 3
B = 2


def members(k: int = K) -> list:
    torch.manual_seed(0)
    return [AlexNet(10, image_size=67) for _ in range(k)]


def fused_layer(alexnets: list, name: str, form: str):
    """(the fused layer as a function of its input, its weight and bias)."""
    k = len(alexnets)
    model = FusedAlexNet(alexnets, ["relu"] * k, [0.0] * k, [None] * k)
    run = model.conv if name in CONVS else model.linear
    layer = getattr(model, name)
    return (lambda x: run(name, x, form)), layer.weight, layer.bias


def check(expected, got, exact: bool, what: str):
    if exact:
        assert torch.equal(expected, got), what
    else:
        # within 1e-6 of the tensor's largest value: the same float32 products summed in another order
        scale = float(expected.abs().max())
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 * scale,
                                   msg=lambda m: f"{what}: {float((got - expected).abs().max()) / scale:.2g} of its largest")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CONVS)
def test_a_fused_convolution_is_k_convolutions(name, form):
    alexnets = members()
    convs = [getattr(m, name) for m in alexnets]
    torch.manual_seed(1)
    size = 15
    xs = [torch.randn(B, convs[0].in_channels, size, size, requires_grad=True) for _ in convs]
    outs = [conv(x) for conv, x in zip(convs, xs)]
    grads = [torch.randn_like(out) for out in outs]
    torch.autograd.backward(outs, grads)

    layer, weight, bias = fused_layer(alexnets, name, form)
    x = torch.cat([x.detach() for x in xs], 1).requires_grad_()
    out = layer(x)
    out.backward(torch.cat(grads, 1))
    exact = form == "split"
    rows = convs[0].out_channels
    for k, conv in enumerate(convs):
        check(outs[k].detach(), out.detach().chunk(K, 1)[k], exact, f"{name} output of member {k}")
        check(xs[k].grad, x.grad.chunk(K, 1)[k], exact, f"{name} input gradient of member {k}")
        check(conv.weight.grad, weight.grad[k * rows:(k + 1) * rows], exact, f"{name} weight gradient of member {k}")
        check(conv.bias.grad, bias.grad[k * rows:(k + 1) * rows], exact, f"{name} bias gradient of member {k}")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", FCS)
def test_a_fused_linear_layer_is_k_linear_layers(name, form):
    alexnets = members()
    linears = [getattr(m, name) for m in alexnets]
    torch.manual_seed(1)
    xs = [torch.randn(B, linears[0].in_features, requires_grad=True) for _ in linears]
    outs = [linear(x) for linear, x in zip(linears, xs)]
    grads = [torch.randn_like(out) for out in outs]
    torch.autograd.backward(outs, grads)

    layer, weight, bias = fused_layer(alexnets, name, form)
    x = torch.stack([x.detach() for x in xs]).requires_grad_()
    out = layer(x)
    out.backward(torch.stack(grads))
    exact = form == "split"
    for k, linear in enumerate(linears):
        check(outs[k].detach(), out.detach()[k], exact, f"{name} output of member {k}")
        check(xs[k].grad, x.grad[k], exact, f"{name} input gradient of member {k}")
        check(linear.weight.grad, weight.grad[k], exact, f"{name} weight gradient of member {k}")
        check(linear.bias.grad, bias.grad[k], exact, f"{name} bias gradient of member {k}")


@pytest.mark.parametrize("name", CONVS + FCS)
def test_one_member_is_the_plain_layer_exactly(name):
    """K = 1 runs the plain layer: a run alone computes what AlexNet computes."""
    (alexnet,) = members(1)
    plain = getattr(alexnet, name)
    torch.manual_seed(1)
    shape = (B, plain.in_channels, 15, 15) if name in CONVS else (B, plain.in_features)
    x = torch.randn(*shape, requires_grad=True)
    out = plain(x)
    grad = torch.randn_like(out)
    out.backward(grad)

    for form in FORMS:
        layer, weight, bias = fused_layer([alexnet], name, form)
        fx = (x.detach() if name in CONVS else x.detach().unsqueeze(0)).clone().requires_grad_()
        fout = layer(fx)
        fout.backward(grad if name in CONVS else grad.unsqueeze(0))
        assert torch.equal(fout.detach().reshape(out.shape), out.detach()), form
        assert torch.equal(fx.grad.reshape(x.shape), x.grad), form
        assert torch.equal(weight.grad.reshape(plain.weight.shape), plain.weight.grad), form
        assert torch.equal(bias.grad.reshape(plain.bias.shape), plain.bias.grad), form
