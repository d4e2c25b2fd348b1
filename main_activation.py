"""Activation: which activation, after every conv and hidden fc layer, trains AlexNet best?

Swept: ReLU, Sigmoid, LeakyReLU (slope 0.01), Tanh, ELU (GELU and SiLU are
available through --values).
Held fixed: Adam at 1e-4, no dropout, no weight penalty, batch 64, the
"subset" regime, 25 epochs. The study found LeakyReLU best.
"""
import sys

from core import logs
from core.ablation import Ablation, Finding

if __name__ == "__main__":  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
    logs.one_line_interrupts()
import sweep  # noqa: E402
from core.activations import ACTIVATIONS  # noqa: E402

VALUES = ["relu", "sigmoid", "leakyrelu", "tanh", "elu"]


def make_run(value: str):
    if value not in ACTIVATIONS:
        raise ValueError(f"unknown activation {value!r}; choose from {', '.join(ACTIVATIONS)}")
    return value, {"activation": value}


ABLATION = Ablation(
    name="activation", title="Activation", order=4, doc=__doc__,
    values=VALUES, values_help=f"activations ({', '.join(ACTIVATIONS)})", make_run=make_run,
    settings=dict(regime="subset", epochs=25),
    decides=("activation",),
    finding=Finding("leakyrelu", "LeakyReLU is best"),
)


def main(argv=None) -> int:
    return sweep.main(ABLATION, argv)


if __name__ == "__main__":
    sys.exit(main())
