"""Activation: which activation, after every conv and hidden fc layer, trains AlexNet best?

Swept: ReLU, Sigmoid, LeakyReLU (slope 0.01), Tanh, ELU (GELU and SiLU are
available through --values).
Held fixed: Adam at 1e-4, no dropout, no weight penalty, batch 64, the
"subset" regime, 25 epochs. The study found LeakyReLU best.
"""
import sys

from core import logs

logs.one_line_interrupts()  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
import sweep  # noqa: E402
from alexnet import ACTIVATIONS  # noqa: E402

EXPERIMENT = "activation"
VALUES = ["relu", "sigmoid", "leakyrelu", "tanh", "elu"]
SETTINGS = dict(regime="subset", epochs=25)


def make_run(value: str):
    if value not in ACTIVATIONS:
        raise ValueError(f"unknown activation {value!r}; choose from {', '.join(ACTIVATIONS)}")
    return value, {"activation": value}


def main(argv=None) -> int:
    return sweep.main(EXPERIMENT, __doc__, VALUES, make_run, SETTINGS,
                      f"activations ({', '.join(ACTIVATIONS)})", argv)


if __name__ == "__main__":
    sys.exit(main())
