"""Consolidated: does the combination of every ablation's winner beat the baseline?

Compared: the study's baseline (Adam 1e-4, ReLU, no dropout, no penalty) and
its consolidated model (Adam 1e-4, elastic net L1 = 5e-6 / L2 = 9.5e-5,
LeakyReLU, dropout 0.25), under the same regime.
Held fixed: batch 64, the "full" regime (45,000 / 5,000), 50 epochs (the
study gave no script or regime for this model; these are its dropout study's).
"""
import sys

import sweep

EXPERIMENT = "consolidated"
VALUES = ["baseline", "consolidated"]
SETTINGS = dict(regime="full", epochs=50)
MODELS = {
    "baseline": dict(optimizer="adam", lr=1e-4, l1=0.0, l2=0.0, activation="relu", dropout=0.0),
    "consolidated": dict(optimizer="adam", lr=1e-4, l1=5e-6, l2=9.5e-5, activation="leakyrelu", dropout=0.25),
}


def make_run(value: str):
    if value not in MODELS:
        raise ValueError(f"unknown model {value!r}; choose from {', '.join(MODELS)}")
    return value, dict(MODELS[value])


def main(argv=None) -> int:
    return sweep.main(EXPERIMENT, __doc__, VALUES, make_run, SETTINGS, "models to train (baseline, consolidated)",
                      argv)


if __name__ == "__main__":
    sys.exit(main())
