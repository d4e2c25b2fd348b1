"""Learning rate: which of Adam's learning rates trains AlexNet best?

Swept: Adam's learning rate over five decades, 1e-6 to 1e-2.
Held fixed: everything else at the study's baseline (ReLU, no dropout, no
weight penalty, batch 64), the "subset" regime (9,000 train / 1,000
validation), 25 epochs. The study found 1e-4 best.
"""
import sys

from core import logs

logs.one_line_interrupts()  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
import sweep  # noqa: E402

EXPERIMENT = "learning_rate"
VALUES = ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2"]
SETTINGS = dict(regime="subset", epochs=25)


def make_run(value: str):
    lr = sweep.parse_number(value, "learning rate")
    return f"lr_{sweep.fmt(lr)}", {"lr": lr}


def main(argv=None) -> int:
    return sweep.main(EXPERIMENT, __doc__, VALUES, make_run, SETTINGS, "Adam learning rates", argv)


if __name__ == "__main__":
    sys.exit(main())
