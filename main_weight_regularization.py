"""Weight regularisation: does an L1 / L2 / elastic-net penalty on the weights help?

Swept: (L1, L2) pairs, the loss being cross-entropy + L1 * sum|w| + L2 * sum w^2
over all parameters, biases included: the study's seven pairs and the
unregularised baseline (0, 0) they should be read against.
Held fixed: Adam at 1e-4, ReLU, no dropout, batch 64, the "subset" regime,
25 epochs. The study found the elastic net L1 = 5e-6, L2 = 9.5e-5 best.
"""
import sys

from core import logs
from core.ablation import Ablation, Finding
from core.results import fmt

if __name__ == "__main__":  # first: a Ctrl-C while the imports below load torch is one line, not a traceback
    logs.one_line_interrupts()
import sweep  # noqa: E402

VALUES = ["0,0", "1e-4,0", "1e-6,0", "0,1e-3", "0,1e-4", "0,1e-5", "5e-6,9.5e-5", "2e-7,8e-5"]


def make_run(value: str):
    parts = value.split(",")
    if len(parts) != 2:
        raise ValueError(f"{value!r} is not an L1,L2 pair such as 5e-6,9.5e-5")
    l1, l2 = (sweep.parse_number(p, "penalty", allow_zero=True) for p in parts)
    return f"l1_{fmt(l1)}_l2_{fmt(l2)}", {"l1": l1, "l2": l2}


ABLATION = Ablation(
    name="weight_regularization", title="Weight regularisation", order=3, doc=__doc__,
    values=VALUES, values_help="L1,L2 penalty pairs", make_run=make_run,
    settings=dict(regime="subset", epochs=25),
    decides=("l1", "l2"),
    finding=Finding("5e-6,9.5e-5", "the elastic net L1 = 5e-6, L2 = 9.5e-5 is best"),
)


def main(argv=None) -> int:
    return sweep.main(ABLATION, argv)


if __name__ == "__main__":
    sys.exit(main())
