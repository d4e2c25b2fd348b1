"""alexnet.py: the study's network, its size, layers, activations and dropout."""
import pytest
import torch
from torch import nn

import alexnet
from alexnet import ACTIVATIONS, AlexNet


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_at_227_px_matches_the_study():
    model = AlexNet(num_classes=10, image_size=227)
    assert count(model) == 58_322_314


def test_layer_names_and_shapes_at_227_px():
    model = AlexNet(num_classes=10, image_size=227)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "conv1.weight": (96, 3, 11, 11), "conv1.bias": (96,),
        "conv2.weight": (256, 96, 5, 5), "conv2.bias": (256,),
        "conv3.weight": (384, 256, 3, 3), "conv3.bias": (384,),
        "conv4.weight": (384, 384, 3, 3), "conv4.bias": (384,),
        "conv5.weight": (256, 384, 3, 3), "conv5.bias": (256,),
        "fc1.weight": (4096, 9216), "fc1.bias": (4096,),
        "fc2.weight": (4096, 4096), "fc2.bias": (4096,),
        "fc3.weight": (10, 4096), "fc3.bias": (10,),
    }


def test_forward_at_227_px_gives_logits_per_class():
    torch.manual_seed(0)
    model = AlexNet(num_classes=10, image_size=227).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 227, 227))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size, side", [(227, 6), (224, 5), (128, 2), (67, 1)])
def test_feature_size(size, side):
    assert alexnet.feature_size(size) == side


@pytest.mark.parametrize("size", [66, 50, 32])
def test_too_small_input_is_refused(size):
    with pytest.raises(ValueError, match="67"):
        alexnet.feature_size(size)
    with pytest.raises(ValueError):
        AlexNet(image_size=size)


@pytest.mark.parametrize("size", [67, 100])
def test_fc1_is_sized_from_the_surviving_feature_map(size):
    side = alexnet.feature_size(size)
    model = AlexNet(num_classes=7, image_size=size).eval()
    assert model.fc1.in_features == 256 * side * side
    with torch.no_grad():
        assert model(torch.randn(3, 3, size, size)).shape == (3, 7)


def test_grayscale_input_channels():
    model = AlexNet(num_classes=10, in_channels=1, image_size=67).eval()
    assert model.conv1.weight.shape[1] == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 67, 67)).shape == (2, 10)


def test_study_activations_are_available():
    for name in ("relu", "leakyrelu", "elu", "tanh", "sigmoid"):
        assert name in ACTIVATIONS
    assert ACTIVATIONS["leakyrelu"]().negative_slope == pytest.approx(0.01)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = AlexNet(num_classes=10, activation=name, image_size=67)
    out = model(torch.randn(2, 3, 67, 67))
    out.sum().backward()
    assert out.shape == (2, 10)
    assert model.conv1.weight.grad is not None and torch.isfinite(model.conv1.weight.grad).all()
    kinds = {type(m) for m in model.modules()}
    assert type(ACTIVATIONS[name]()) in kinds


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="swish"):
        AlexNet(activation="swish")


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_dropout_outside_unit_interval_is_refused(p):
    with pytest.raises(ValueError):
        AlexNet(dropout=p, image_size=67)


def test_no_dropout_modules_at_p_zero():
    model = AlexNet(dropout=0.0, image_size=67)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    torch.manual_seed(0)
    x = torch.randn(2, 3, 67, 67)
    model.train()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # nothing random in training mode


def test_dropout_is_active_in_training_and_off_in_eval():
    torch.manual_seed(0)
    model = AlexNet(dropout=0.5, image_size=67)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(m.p == 0.5 for m in drops)
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_dropout_does_not_change_the_parameters():
    assert count(AlexNet(dropout=0.25, image_size=67)) == count(AlexNet(dropout=0.0, image_size=67))
