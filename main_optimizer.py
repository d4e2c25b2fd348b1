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
from core.ablation import Ablation, Finding
from core.results import fmt

if __name__ == "__main__":  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
    logs.one_line_interrupts()
import sweep  # noqa: E402
from core.optimizers import OPTIMIZERS  # noqa: E402

VALUES = ["sgd:0.1", "adagrad:0.01", "adam:1e-4"]


def make_run(value: str):
    name, colon, lr_text = value.partition(":")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if colon and not lr_text:
        raise ValueError(f"{value!r} has a colon but no learning rate; write {name} or {name}:LR")
    lr = sweep.parse_number(lr_text, "learning rate") if colon else OPTIMIZERS[name][1]
    return f"{name}_lr{fmt(lr)}", {"optimizer": name, "lr": lr}


ABLATION = Ablation(
    name="optimizer", title="Optimizer", order=2, doc=__doc__,
    values=VALUES, make_run=make_run,
    values_help=f"optimizers as name or name:lr; a bare name takes its study learning rate ({', '.join(OPTIMIZERS)})",
    settings=dict(regime="subset", epochs=50),
    decides=("optimizer", "lr"),
    finding=Finding("adam:1e-4", "Adam (lr 1e-4) is best, about 70% validation accuracy; Adagrad (lr 0.01) "
                                 "had a first-epoch loss of about 7.9 million and ended near 49%"),
)


def main(argv=None) -> int:
    return sweep.main(ABLATION, argv)


if __name__ == "__main__":
    sys.exit(main())
