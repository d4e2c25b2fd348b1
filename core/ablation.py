"""An ablation as its script declares it, once: what it sweeps, what it holds fixed, what
it decides for the consolidated model and what the study found. Every other module learns
of the ablations from these declarations (report.study() finds them in the main_*.py
scripts); none names one.

A new ablation is one new file, main_<name>.py, holding an ABLATION = Ablation(...) and a
main() that passes it to sweep.main (main_dropout.py is the shortest to copy).
"""
import os
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Finding:
    """What the study concluded: the setting it found best and its words for the conclusion."""
    best: str  # a swept value as --values takes it ("0.25"): the run it names is the published best
    claim: str  # the conclusion as the report's findings table quotes it


@dataclass(frozen=True)
class Requires:
    """A setting of the consolidated model under which an ablation's winner holds (the
    learning-rate sweep's best rate is Adam's: it says nothing about SGD's)."""
    key: str  # a config key another ablation may decide, e.g. "optimizer"
    value: object  # the value the ablation held it at, e.g. "adam"
    words: str  # how messages name that value, e.g. "Adam"


@dataclass(frozen=True)
class Ablation:
    name: str  # the experiment's name: results/<name>.json, models/<name>/, images/<name>_*.png
    title: str  # how plots and the report name it in words
    order: int  # its place in the report, the study's order: smaller first
    doc: str  # the script's docstring, which --help shows
    values: list  # the swept values as --values takes them (the default sweep)
    values_help: str  # what --values takes, in words
    make_run: Callable  # a value -> (run name, config changes); ValueError with one sentence for a bad one
    settings: dict  # the settings held fixed where they differ from train.DEFAULTS (regime, epochs)
    decides: tuple = ()  # the consolidated model's config keys its best setting chooses
    finding: Finding | None = None  # the study's conclusion; None for an ablation the study did not run
    requires: Requires | None = None  # its best applies only where the consolidated model has this setting
    tune_lr: bool = True  # whether --tune-lr is offered: not where the learning rate is what is swept
    add_flags: Callable | None = None  # add_flags(parser): flags of the script's own
    prepare: Callable | None = None  # prepare(args) after parsing: None, or the make_run to use instead

    def published_run(self) -> tuple | None:
        """(run name, config changes) of the setting the study found best, or None."""
        return self.make_run(self.finding.best) if self.finding else None


def script_modules(folder: str) -> list:
    """The module names of the main_*.py scripts in folder, sorted: each declares one ablation."""
    return sorted(f[:-len(".py")] for f in os.listdir(folder) if f.startswith("main_") and f.endswith(".py"))


def in_report_order(ablations) -> list:
    """The ablations in the study's order (by order, then name)."""
    return sorted(ablations, key=lambda a: (a.order, a.name))


def titles(ablations) -> dict:
    """{name: title} of the ablations."""
    return {a.name: a.title for a in ablations}


def decision_order(ablations) -> list:
    """The ablations that decide settings of the consolidated model, in the order --from-results
    takes their winners: one whose winner holds only under a setting (Requires) after the one
    deciding that setting, so that it is judged against the setting chosen; else the study's order."""
    deciding = [a for a in in_report_order(ablations) if a.decides]
    required = {a.requires.key for a in deciding if a.requires}
    return sorted(deciding, key=lambda a: not required & set(a.decides))
