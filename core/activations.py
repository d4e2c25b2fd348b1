"""The activations a run may use, by name: one table for AlexNet and its fused form."""
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leakyrelu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    # extras beyond the study's five
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
