"""Learning rate: which of Adam's learning rates trains AlexNet best?

Swept: Adam's learning rate over five decades, 1e-6 to 1e-2.
Held fixed: everything else at the study's baseline (ReLU, no dropout, no
weight penalty, batch 64), the "subset" regime (9,000 train / 1,000
validation), 25 epochs. The study found 1e-4 best.
"""
import sys

from core import logs
from core.ablation import Ablation, Finding, Requires
from core.results import fmt

if __name__ == "__main__":  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
    logs.one_line_interrupts()
import sweep  # noqa: E402

VALUES = ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2"]


def make_run(value: str):
    lr = sweep.parse_number(value, "learning rate")
    return f"lr_{fmt(lr)}", {"lr": lr}


ABLATION = Ablation(
    name="learning_rate", title="Learning rate", order=1, doc=__doc__,
    values=VALUES, values_help="Adam learning rates", make_run=make_run,
    settings=dict(regime="subset", epochs=25),
    decides=("lr",),
    finding=Finding("1e-4", "Adam's learning rate 1e-4 is best of 1e-6 ... 1e-2"),
    requires=Requires("optimizer", "adam", "Adam"),  # the rates were tried with Adam only
    tune_lr=False,  # the rate is what this sweep varies
)


def main(argv=None) -> int:
    return sweep.main(ABLATION, argv)


if __name__ == "__main__":
    sys.exit(main())
