"""optimizers.make_optimizer: the fused kernel only where a fused step really runs on the
parameters' device (issue 29: fused Adagrad is CPU-only in the torch releases requirements.txt
allows, yet its constructor accepts CUDA parameters and fails only at the first step)."""
import pytest
import torch

from core import optimizers


class FailsAtFusedStep(torch.optim.Adagrad):
    """As Adagrad on CUDA: fused=True is accepted, and the first step raises."""

    def step(self, closure=None):
        if self.defaults.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                               "supported devices: ['cpu'].")
        return super().step(closure)


class NoFusedArgument(torch.optim.SGD):
    def __init__(self, params, lr, **kwargs):
        if "fused" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'fused'")
        super().__init__(params, lr=lr, **kwargs)


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(optimizers, "_FUSED_STEPS", {}, raising=False)
    monkeypatch.setitem(optimizers.OPTIMIZERS, "fails-at-step", (FailsAtFusedStep, 0.01, {}))
    monkeypatch.setitem(optimizers.OPTIMIZERS, "no-fused", (NoFusedArgument, 0.1, {}))
    return optimizers.OPTIMIZERS


def one_step(name: str) -> tuple:
    w = torch.nn.Parameter(torch.ones(3))
    opt = optimizers.make_optimizer(name, [w], 0.5)
    w.grad = torch.ones(3)
    opt.step()
    return opt, w


@pytest.mark.parametrize("name", ["fails-at-step", "no-fused"])
def test_an_optimizer_without_a_fused_kernel_for_the_device_takes_the_plain_one(table, name):
    opt, w = one_step(name)
    assert not opt.defaults.get("fused") and bool((w < 1).all())


def test_a_fused_kernel_that_runs_is_used(table):
    """Adam's fused kernel runs on a CPU with every torch that requirements.txt allows."""
    opt, w = one_step("adam")
    assert opt.defaults.get("fused") is True and bool((w < 1).all())
    assert optimizers.fused_steps("adam", torch.device("cpu"))
