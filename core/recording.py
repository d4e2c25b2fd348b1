"""A finished run's files, written in the order that leaves nothing half-done: its
checkpoints (what --save keeps), then its record listing them, then the merged results
file; and the temporary files that a writer killed inside a write left behind."""
import os

from core import checkpoints
from core import logs
from core import storage
from core.results import evaluation_paths, record_path, write_record, write_results


def remove_left_behind(experiment: str, out: str, models_dir: str, name: str, seed: int, stem: str,
                       desc: str) -> None:
    """Remove the temporary files that a writer of the run's files (checkpoints, record), killed
    inside a write, left; only while holding the run's claim, under which alone they are written."""
    removed = storage.remove_left_behind([checkpoints.resume_path(models_dir, stem),
                                          checkpoints.final_path(models_dir, stem),
                                          checkpoints.best_path(models_dir, stem),
                                          record_path(out, experiment, name, seed)])
    if removed:
        logs.info(f"{desc}: removed {len(removed)} temporary file(s) left by an interrupted write: "
                  + ", ".join(os.path.basename(path) for path in removed))


def record_run(experiment, record, state_dict, best_state, dataset, out, models_dir, stem, order) -> None:
    """Final checkpoints first (what --save keeps: the last epoch's weights, the best
    validation epoch's, both, or none; where the best epoch is the last, one file under both
    names), then the run's record, listing them, then the merged results; a failed run
    (state_dict None) keeps its resume file, so that the rerun resumes."""
    if state_dict is not None:
        record["checkpoints"] = save_checkpoints(experiment, record, state_dict, best_state, dataset, models_dir, stem)
        forget_evaluations(out, experiment, stem)
    write_record(out, experiment, record)
    write_results(out, experiment, order)
    resume = checkpoints.resume_path(models_dir, stem)
    if state_dict is not None and os.path.exists(resume):
        os.remove(resume)


def save_checkpoints(experiment, record, state_dict, best_state, dataset, models_dir, stem) -> dict:
    """The run's final checkpoints as --save asks; an earlier training's that this one does not
    replace are removed. Returns what the record lists: {"last", "best", "best_is_last"}."""
    save = record["config"].get("save", "both")
    last_path, best_path = checkpoints.final_path(models_dir, stem), checkpoints.best_path(models_dir, stem)
    best_is_last = record.get("best_epoch") is not None and record["best_epoch"] == record.get("epochs_completed")
    kept = {"last": None, "best": None, "best_is_last": best_is_last}
    if save in ("both", "last"):
        checkpoints.save({**checkpoints.final_state(state_dict, record, experiment, dataset.num_classes,
                                                    dataset.classes), "epoch": record.get("epochs_completed")},
                         last_path)
        kept["last"] = os.path.basename(last_path)
    if best_state is not None and save in ("both", "best"):
        if kept["last"] and best_is_last:  # the same weights, epoch and test accuracy: one file, two names
            checkpoints.link_or_copy(last_path, best_path)
        else:
            best = {**record, "test_acc": record.get("test_acc_at_best")}
            checkpoints.save({**checkpoints.final_state(best_state, best, experiment, dataset.num_classes,
                                                        dataset.classes), "epoch": record["best_epoch"]},
                             best_path)
        kept["best"] = os.path.basename(best_path)
    for name, path in (("last", last_path), ("best", best_path)):
        if kept[name] is None and os.path.exists(path):  # an earlier training's, no longer this run's
            os.remove(path)
    return kept


def forget_evaluations(out: str, experiment: str, stem: str) -> None:
    """Remove evaluate.py's files of a run's earlier checkpoints, which a new training replaces."""
    for name in (stem, f"{stem}.best"):
        for path in evaluation_paths(out, experiment, name).values():
            if os.path.exists(path):
                os.remove(path)
