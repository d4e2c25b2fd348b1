"""Optimizer: which optimizer, each at the study's learning rate for it, trains AlexNet best?

Swept: SGD (lr 0.1), Adagrad (lr 0.01), Adam (lr 1e-4). Each optimizer keeps
its own learning rate: the study did not re-tune it, so this compares
(optimizer, lr) pairs, not optimizers at their best.
Held fixed: ReLU, no dropout, no weight penalty, batch 64, the "subset"
regime, 50 epochs. The study found Adam best (about 70% validation accuracy);
Adagrad's first-epoch loss reached about 7.9 million and it ended near 49%.
"""
import sys

from core import logs

logs.one_line_interrupts()  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
import sweep  # noqa: E402
from train import OPTIMIZERS  # noqa: E402

EXPERIMENT = "optimizer"
VALUES = ["sgd:0.1", "adagrad:0.01", "adam:1e-4"]
SETTINGS = dict(regime="subset", epochs=50)


def make_run(value: str):
    name, colon, lr_text = value.partition(":")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if colon and not lr_text:
        raise ValueError(f"{value!r} has a colon but no learning rate; write {name} or {name}:LR")
    lr = sweep.parse_number(lr_text, "learning rate") if colon else OPTIMIZERS[name][1]
    return f"{name}_lr{sweep.fmt(lr)}", {"optimizer": name, "lr": lr}


def main(argv=None) -> int:
    return sweep.main(EXPERIMENT, __doc__, VALUES, make_run, SETTINGS,
                      f"optimizers as name or name:lr; a bare name takes its study learning rate "
                      f"({', '.join(OPTIMIZERS)})", argv)


if __name__ == "__main__":
    sys.exit(main())
