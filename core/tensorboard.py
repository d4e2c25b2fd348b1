"""TensorBoard runs of a sweep (--tensorboard, plotting.py --tensorboard): one run per (setting,
seed) under <out>/runs/<experiment>/<run>_seed<k>/, named as its record is.

A run's folder is always written from the run's history: when a run starts or resumes its old
event files go and the epochs its resume state holds are written again, then each new epoch is
appended and flushed; a finished run is written whole from its record. A kill anywhere (in an
epoch, in a write) so leaves at most epochs that the next start writes away: each epoch shows once.

tensorboard is optional (requirements-tensorboard.txt). It is imported only inside the functions
that write, so that a sweep without the flag never loads it.
"""
import glob
import math
import os

from core import logs

INSTALL = "pip install tensorboard"
EVENTS = "events.out.tfevents."
# every run's hyperparameters, each with a value of its type: every run declares the same columns,
# so the HParams table is one table whichever run's declaration TensorBoard reads
HPARAMS = {"experiment": "", "setting": "", "optimizer": "", "lr": 0.0, "l1": 0.0, "l2": 0.0, "activation": "",
           "dropout": 0.0, "seed": 0, "batch_size": 0, "image_size": 0, "regime": "", "precision": "",
           "dataset": "", "epochs": 0, "chosen_lr": 0.0, "status": ""}
CONFIG_HPARAMS = ("optimizer", "lr", "l1", "l2", "activation", "dropout", "seed", "batch_size", "image_size",
                  "regime", "precision", "dataset", "epochs")
# the HParams metrics (tag: the record's key), accuracies in percent like every accuracy here
METRICS = {"hparams/best_val_acc": "best_val_acc", "hparams/test_acc": "test_acc",
           "hparams/test_acc_at_best": "test_acc_at_best"}


def missing() -> str | None:
    """One sentence where the tensorboard package cannot be imported; None where it can."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return f"the tensorboard package is not installed; install it with {INSTALL}"
    return None


def run_dir(out: str, experiment: str, name: str, seed: int) -> str:
    """The run's folder: the same <run>_seed<k> as its record, results/<experiment>/<run>_seed<k>.json."""
    return os.path.join(out, "runs", experiment, f"{name}_seed{seed}")


def _percent(value):
    return None if value is None else 100.0 * value


def open_run(folder: str):
    """A SummaryWriter on folder, its earlier event files removed first: the run starts anew."""
    from torch.utils.tensorboard import SummaryWriter
    for path in glob.glob(os.path.join(glob.escape(folder), EVENTS + "*")):
        os.remove(path)
    return SummaryWriter(folder)


def _scalar(writer, tag: str, value, step: int) -> None:
    if value is not None and math.isfinite(value):
        writer.add_scalar(tag, value, step)


def write_epochs(writer, history: dict, timing: dict, lr: float, start: int = 0) -> None:
    """Epochs start+1 ... of history (the epoch is the step): mean training loss, training and
    validation accuracy in percent, the learning rate and training images/s (where timed: a resume
    file lacks its last epoch's timing; in a fused group, the whole group's rate)."""
    rates = timing.get("images_per_s", [])
    for i in range(start, len(history["loss"])):
        step = i + 1
        _scalar(writer, "loss/train", history["loss"][i], step)
        _scalar(writer, "accuracy/train", _percent(history["train_acc"][i]), step)
        _scalar(writer, "accuracy/val", _percent(history["val_acc"][i]), step)
        _scalar(writer, "lr", lr, step)
        _scalar(writer, "images_per_s", rates[i] if i < len(rates) else None, step)


def hparams_of(experiment: str, record: dict, chosen_lr: float | None = None) -> dict:
    """The run's hyperparameters as the HParams table shows them (chosen_lr: under --tune-lr,
    the rate chosen for its setting)."""
    config, tune = record["config"], record.get("tune")
    values = {"experiment": experiment, "setting": tune["setting"] if isinstance(tune, dict) else record["name"],
              **{key: config.get(key) for key in CONFIG_HPARAMS}, "status": record["status"]}
    if chosen_lr is not None:
        values["chosen_lr"] = chosen_lr
    return {key: value for key, value in values.items() if value is not None}


def write_end(writer, experiment: str, record: dict, chosen_lr: float | None = None) -> None:
    """The run's test accuracy at its last epoch, its HParams metrics and its hyperparameters,
    written into the run's own folder (add_hparams would make a folder of its own: a second run)."""
    from torch.utils.tensorboard.summary import hparams
    step = len(record["history"]["loss"])
    _scalar(writer, "accuracy/test", _percent(record.get("test_acc")), step)
    for tag, key in METRICS.items():
        _scalar(writer, tag, _percent(record.get(key)), step)
    declared, _, _ = hparams(HPARAMS, dict.fromkeys(METRICS, 0.0))
    _, start, end = hparams(hparams_of(experiment, record, chosen_lr), {})
    for summary in (declared, start, end):
        writer.file_writer.add_summary(summary)


def write_run(folder: str, experiment: str, record: dict, chosen_lr: float | None = None) -> None:
    """Write a run's folder anew from its record: every epoch, the test accuracy, the hparams."""
    writer = open_run(folder)
    try:
        write_epochs(writer, record["history"], record.get("timing") or {}, record["config"]["lr"])
        write_end(writer, experiment, record, chosen_lr)
    finally:
        writer.close()


def chosen_rates(results: dict) -> dict:
    """{setting: its chosen learning rate} of a tuned sweep (--tune-lr), as core.stats chooses it
    (and results["tuning"] states it); {} for another sweep."""
    from core import stats
    if not stats.is_tuned(results):
        return {}
    return {setting: t["chosen_lr"] for setting, t in stats.tuning(results).items()}


def write_results(out: str, results: dict, only: set | None = None) -> list:
    """Write every recorded run of an experiment's results (or those whose (name, seed) is in
    only) from its record; returns the folders written. Rerunning writes the same runs again."""
    experiment, chosen = results["experiment"], chosen_rates(results)
    written = []
    for run in results["runs"]:
        if only is not None and (run["name"], run["seed"]) not in only:
            continue
        tune = run.get("tune")
        folder = run_dir(out, experiment, run["name"], run["seed"])
        write_run(folder, experiment, run, chosen.get(tune["setting"]) if isinstance(tune, dict) else None)
        written.append(folder)
    return written


class Board:
    """The runs one process trains, written live: a writer per run folder, and the epochs
    written there so far."""

    def __init__(self, out: str, experiment: str):
        self.out, self.experiment = out, experiment
        self.writers = {}  # folder: [SummaryWriter, epochs written]

    def watcher(self, jobs: list):
        """on_epoch(i, history, timing) for train.train_group, jobs[i] being its run i (core.plan.Job)."""
        runs = [(run_dir(self.out, self.experiment, job.name, job.config["seed"]), job.config["lr"]) for job in jobs]
        return lambda i, history, timing: self.noted(*runs[i], history, timing)

    def noted(self, folder: str, lr: float, history: dict, timing: dict) -> None:
        """After a run starts or resumes, and after each of its epochs: write its epochs not yet
        written. Its first call here, or a history shorter than what was written (a group going on
        from its resume files after running out of memory), starts its folder anew."""
        try:
            held = self.writers.get(folder)
            if held is None or len(history["loss"]) < held[1]:
                self.close(folder)
                held = self.writers[folder] = [open_run(folder), 0]
            write_epochs(held[0], history, timing, lr, held[1])
            held[1] = len(history["loss"])
            held[0].flush()
        except OSError as err:
            self.failed(folder, err)

    def finished(self, job, record: dict) -> None:
        """The run is recorded: its folder is written anew from the record."""
        folder = run_dir(self.out, self.experiment, job.name, job.config["seed"])
        try:
            self.close(folder)
            write_run(folder, self.experiment, record)
        except OSError as err:
            self.failed(folder, err)

    def failed(self, folder: str, err: OSError) -> None:
        """A run's curves are not worth its training: say so, and go on (plotting.py --tensorboard
        writes the folder again from the record later)."""
        self.writers.pop(folder, None)
        logs.problem(f"--tensorboard: cannot write {folder} ({err}); training goes on, and "
                     f"plotting.py --tensorboard writes it again from its record")

    def close(self, folder: str | None = None) -> None:
        """Close one run's writer, or (folder None) every one."""
        for key in [folder] if folder else list(self.writers):
            held = self.writers.pop(key, None)
            if held:
                held[0].close()
