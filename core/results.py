"""Results files: where runs are recorded, how they are read, checked, merged and
shown. Imported by the sweep, plotting.py and report.py; needs no torch.

Each finished (setting, seed) run is one record,
results/<experiment>/<name>_seed<k>.json, written atomically, so any number of
processes (terminals, torchrun ranks, scheduler shards, machines sharing a
filesystem) can record runs of one experiment into one --out without losing any.
results/<experiment>.json (the runs, their summary over seeds and the best
setting) and results/<experiment>.csv are derived from the records under a lock,
and are rebuilt from them whenever a run finishes. A results file written before
records existed is read too: its runs count as records.
"""
import csv
import io
import json
import math
import os

from core.storage import atomic_write_text, locked, remove_left_behind

STATUSES = ("completed", "diverged", "failed")
CURVES = ("loss", "train_acc", "val_acc")


class ResultsError(ValueError):
    """A results file or run record is damaged; the message is one sentence."""


def fmt(value) -> str:
    """Compact text for a hyperparameter value in names and tables: 1e-05, 0.25, adam."""
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------
# Paths

def results_path(out: str, experiment: str) -> str:
    return os.path.join(out, "results", f"{experiment}.json")


def records_dir(out: str, experiment: str) -> str:
    return os.path.join(out, "results", experiment)


PICTURES = ("confusion", "filters", "mistakes")  # what evaluate.py draws of a checkpoint


def evaluation_paths(out: str, experiment: str, run: str) -> dict:
    """Where evaluating checkpoint <run>.pt of an experiment writes: {"json", "confusion", "filters", "mistakes"}."""
    stem = f"{experiment}_{run}"
    return {"json": os.path.join(out, "results", f"{stem}_eval.json"),
            **{kind: os.path.join(out, "images", f"{stem}_{kind}.png") for kind in PICTURES}}


def record_path(out: str, experiment: str, name: str, seed: int) -> str:
    return os.path.join(records_dir(out, experiment), f"{name}_seed{seed}.json")


def plan_path(out: str, experiment: str) -> str:
    return os.path.join(out, "results", f".{experiment}.planned.json")


def csv_path(out: str, experiment: str) -> str:
    return os.path.join(out, "results", f"{experiment}.csv")


def merged_paths(out: str, experiment: str) -> list:
    """The experiment's files that any process may write, each only under the experiment's lock;
    whoever holds it removes what a writer killed inside a write of them left (storage.remove_left_behind)."""
    return [results_path(out, experiment), csv_path(out, experiment), plan_path(out, experiment)]


def experiments_in(out: str) -> list:
    """Names of the experiments with run records or a results file under out/results (not
    bench.py's or evaluate.py's files, which share the folder)."""
    folder = os.path.join(out, "results")
    if not os.path.isdir(folder):
        return []
    found = {d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
             and any(f.endswith(".json") and not f.startswith(".") for f in os.listdir(os.path.join(folder, d)))}
    for f in os.listdir(folder):
        if f.endswith(".json") and f[:-5] not in found and not f.endswith("_eval.json") and not f.startswith(".") \
                and not f.startswith("bench"):
            found.add(f[:-5])
    return sorted(found)


# ---------------------------------------------------------------------------
# Checking what is read

def _number_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _accuracy_or_none(value) -> bool:
    return value is None or (_number_or_none(value) and 0 <= value <= 1)  # NaN is not in [0, 1]


def _loss_or_none(value) -> bool:
    return value is None or (_number_or_none(value) and math.isfinite(value) and value >= 0)


def _non_finite(value) -> bool:
    """Whether value holds NaN or infinity anywhere (json.load reads them; this repository writes null)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (dict, list)):
        return any(map(_non_finite, value.values() if isinstance(value, dict) else value))
    return False


def _whole(least: int):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= least


def _real(holds):
    return lambda value: (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                          and holds(value))


# the numbers of a run's config, some of which its params and its tune.params hold too: what each must be
NUMBERS = {"lr": ("a positive number", _real(lambda v: v > 0)),
           **{key: ("a number of at least 0", _real(lambda v: v >= 0)) for key in ("l1", "l2", "checkpoint_seconds")},
           "dropout": ("a number in [0, 1)", _real(lambda v: 0 <= v < 1)),
           "seed": ("a whole number of at least 0", _whole(0)),
           **{key: ("a whole number of at least 1", _whole(1))
              for key in ("image_size", "batch_size", "epochs", "checkpoint_every")},
           **{key: ("a whole number of at least 1, or null", lambda v: v is None or _whole(1)(v))
              for key in ("train_size", "val_size", "test_size")}}
# a tuned run's tune entry (--tune-lr): what each key must be
TUNE_KEYS = {"setting": ("a setting's name", lambda v: isinstance(v, str) and v != ""),
             "own_lr": NUMBERS["lr"],
             "params": ("an object", lambda v: isinstance(v, dict)),
             "grid": ("a list of rates", lambda v: isinstance(v, list) and all(isinstance(g, str) for g in v))}


def _numbers_problem(values: dict, where: str, name: str) -> str | None:
    for key, (what, ok) in NUMBERS.items():
        if key in values and not ok(values[key]):
            return f"run {name!r} has a {where}.{key} that is not {what} ({values[key]!r})"
    return None


def _tune_problem(run: dict, name: str) -> str | None:
    """Why a run's tune entry is not one this repository writes, or None (a run without one too)."""
    if "tune" not in run:
        return None
    tune = run["tune"]
    if not isinstance(tune, dict):
        return f"run {name!r} has a 'tune' that is not an object"
    for key, (what, ok) in TUNE_KEYS.items():
        if not ok(tune.get(key)):
            return f"run {name!r} has a tune.{key} that is not {what}"
    return _numbers_problem(tune["params"], "tune.params", name)


def run_problem(run) -> str | None:
    """Why run is not a run record this repository writes, or None if it is one."""
    if not isinstance(run, dict):
        return "a run is not an object"
    for key, kind in (("name", str), ("params", dict), ("history", dict), ("status", str)):
        if not isinstance(run.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    if not isinstance(run.get("config", {}), dict):
        return f"run {run['name']!r} has a 'config' that is not an object"
    name = run["name"]
    if not isinstance(run.get("seed"), int) or isinstance(run["seed"], bool) or run["seed"] < 0:
        return f"run {name!r} has no whole-number 'seed'"
    if run["status"] not in STATUSES:
        return f"run {name!r} has status {run['status']!r}"
    for key in CURVES:
        curve = run["history"].get(key)
        if not isinstance(curve, list) or not all(map(_number_or_none, curve)):
            return f"run {name!r} has no list of numbers under history.{key}"
    for key in ("test_acc", "best_val_acc"):
        if not _number_or_none(run.get(key)):
            return f"run {name!r} has a {key!r} that is not a number"
    if run["status"] == "completed" and run.get("test_acc") is None:
        return f"completed run {name!r} has no test_acc"
    for key, ok in (("best_epoch", lambda v: v is None or _whole(1)(v)), ("epochs_completed", _whole(0))):
        if key in run and not ok(run[key]):
            return f"run {name!r} has a {key!r} that is not a whole number"
    problem = (_numbers_problem(run.get("config", {}), "config", name) or _numbers_problem(run["params"], "params", name)
               or _tune_problem(run, name))
    return problem or _impossible(run, name)


def _impossible(run: dict, name: str) -> str | None:
    """Why a well-formed record cannot be true, or None: every epoch has a loss and both
    accuracies, losses are finite and >= 0, accuracies lie in [0, 1], nothing is NaN or infinite,
    the best epoch is one of the epochs completed, and a tuned run is a run of the setting its
    tune entry names."""
    history = run["history"]
    if len({len(history[key]) for key in CURVES}) > 1:
        return (f"run {name!r} has history lists of different lengths ("
                + ", ".join(f"{key} {len(history[key])}" for key in CURVES) + ")")
    if not all(map(_loss_or_none, history["loss"])):
        return f"run {name!r} has a history.loss entry that is not a finite number of at least 0"
    for key in ("train_acc", "val_acc"):
        if not all(map(_accuracy_or_none, history[key])):
            return f"run {name!r} has a history.{key} entry that is not an accuracy in [0, 1]"
    for key in ("test_acc", "best_val_acc", "test_acc_at_best"):
        if not _accuracy_or_none(run.get(key)):
            return f"run {name!r} has a {key!r} that is not an accuracy in [0, 1]"
    if _non_finite(run):
        return f"run {name!r} holds NaN or infinity, which this repository writes as null"
    best, done = run.get("best_epoch"), run.get("epochs_completed")
    if best is not None and done is not None and best > done:
        return f"run {name!r} has best_epoch {best}, past its epochs_completed {done}"
    return _not_its_setting(run, name) if "tune" in run else None


def _not_its_setting(run: dict, name: str) -> str | None:
    """Why a well-formed tuned run is not a run of the setting its tune entry names, or None: it
    is named <setting> (at the setting's own rate) or <setting>_at_lr<rate>, and its config and
    params hold the setting's params (the rate aside)."""
    tune, setting = run["tune"], run["tune"]["setting"]
    if name != setting and not name.startswith(f"{setting}_at_lr"):
        return f"run {name!r} is not a run of setting {setting!r}, which its tune.setting names"
    for key, value in tune["params"].items():
        for where, values in (("config", run.get("config", {})), ("params", run["params"])):
            if key != "lr" and key in values and values[key] != value:
                return (f"run {name!r} has {where}.{key} {values[key]!r}, but its tune entry gives setting "
                        f"{setting!r} {key} {value!r}")
    lr = run.get("config", {}).get("lr", run["params"].get("lr"))
    if name == setting and lr is not None and lr != tune["own_lr"]:
        return (f"run {name!r} is named as setting {setting!r} at its own rate {fmt(tune['own_lr'])}, but its lr is "
                f"{fmt(lr)}")
    return None


def _refuse(path: str, problem: str):
    raise ResultsError(f"{path} is not a results file this repository wrote ({problem}); "
                       f"move it away or choose another --out")


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as err:
        _refuse(path, str(err))
    except OSError as err:
        raise ResultsError(f"{path} could not be read ({err.strerror})") from None


def read_summary_file(path: str, experiment: str) -> list:
    """The runs of results/<experiment>.json (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    results = _read_json(path)
    runs = results.get("runs") if isinstance(results, dict) else None
    if not isinstance(runs, list):
        _refuse(path, "it holds no list of runs")
    for run in runs:
        problem = run_problem(run)
        if problem:
            _refuse(path, problem)
    return runs


def read_records(out: str, experiment: str) -> list:
    folder = records_dir(out, experiment)
    if not os.path.isdir(folder):
        return []
    runs = []
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".json") or fname.startswith("."):
            continue
        path = os.path.join(folder, fname)
        run = _read_json(path)
        problem = run_problem(run)
        if problem:
            _refuse(path, problem)
        runs.append(run)
    return runs


def read_results(out: str, experiment: str, order: list | None = None) -> dict:
    """Every recorded run of the experiment: the results file's runs, replaced or
    joined by the run records. Runs follow the results file's order, then order
    (a list of setting names), then name; seeds ascending.
    Raises ResultsError with one sentence on a damaged file."""
    listed = read_summary_file(results_path(out, experiment), experiment)
    by_key = {(r["name"], r["seed"]): r for r in listed}
    by_key.update({(r["name"], r["seed"]): r for r in read_records(out, experiment)})
    names = list(dict.fromkeys([r["name"] for r in listed] + list(order or [])))
    position = {n: i for i, n in enumerate(names)}
    runs = sorted(by_key.values(), key=lambda r: (position.get(r["name"], len(names)), r["name"], r["seed"]))
    return {"experiment": experiment, "runs": runs}


# settings that change when files are written, or which kernels compute the same arithmetic, not what a run computes
NEUTRAL_KEYS = ("checkpoint_every", "checkpoint_seconds", "kernels", "save")


def same_config(a, b) -> bool:
    """Whether two run configs describe the same run (NEUTRAL_KEYS aside)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    strip = lambda c: {k: v for k, v in c.items() if k not in NEUTRAL_KEYS}
    return strip(a) == strip(b)


def finished(run: dict | None, config: dict) -> bool:
    """Whether run is a finished record (completed or diverged) of this config."""
    return bool(run) and run["status"] in ("completed", "diverged") and same_config(run.get("config"), config)


# ---------------------------------------------------------------------------
# What a sweep set out to train, and what of it is finished

def run_key(name: str, seed: int) -> str:
    return f"{name} seed {seed}"


def add_to_plan(out: str, experiment: str, configs: dict) -> None:
    """Record that {run_key: config} are to be trained (the newest config of a run wins), under
    the experiment's lock, so that a reader can tell a finished sweep from one still under way."""
    path = plan_path(out, experiment)
    with locked(os.path.join(out, "results", f".{experiment}.lock")):
        remove_left_behind(merged_paths(out, experiment))
        planned = read_plan(out, experiment)
        planned.update(configs)
        atomic_write_text(path, to_json({"runs": planned}))
    if os.path.exists(results_path(out, experiment)):  # its progress counts a run planned again with another
        write_results(out, experiment)  # config as pending, even if this sweep stops before any run finishes


def sweeping_path(out: str, experiment: str) -> str:
    """The file that every live sweep of the experiment on this --out holds a shared lock on
    (storage.Presence), so that forget_pending can tell that no other one is under way."""
    return os.path.join(out, "results", f".{experiment}.sweeping.lock")


def forget_pending(out: str, experiment: str, keep: set) -> list:
    """Drop from the plan the runs still pending whose run keys are not in keep (what a stopped
    sweep planned that a later, narrower one did not ask for), under the experiment's lock;
    returns their keys. The caller makes sure no other sweep is under way (sweeping_path)."""
    with locked(os.path.join(out, "results", f".{experiment}.lock")):
        planned = read_plan(out, experiment)
        latest = {run_key(r["name"], r["seed"]): r for r in read_results(out, experiment)["runs"]}
        dropped = [key for key, config in planned.items() if key not in keep and not finished(latest.get(key), config)]
        if dropped:
            atomic_write_text(plan_path(out, experiment),
                              to_json({"runs": {k: c for k, c in planned.items() if k not in dropped}}))
    return dropped


def read_plan(out: str, experiment: str) -> dict:
    """{run_key: config} of every run a sweep on this --out set out to train; {} for results
    written before plans were kept (such sweeps count as finished)."""
    path = plan_path(out, experiment)
    if not os.path.exists(path):
        return {}
    planned = _read_json(path)
    runs = planned.get("runs") if isinstance(planned, dict) else None
    if not isinstance(runs, dict) or not all(isinstance(c, dict) for c in runs.values()):
        _refuse(path, "it holds no object of planned runs")
    return runs


def read_with_progress(out: str, experiment: str) -> dict:
    """read_results, with "progress" added."""
    found = read_results(out, experiment)
    found["progress"] = progress(out, experiment, found["runs"])
    return found


def listed(items: list, shown: int) -> str:
    """'a, b, c and 4 more': the first items, then how many are left out."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def progress(out: str, experiment: str, runs: list) -> dict:
    """{"planned", "finished", "pending", "failed"}: how many runs the sweeps on this --out set
    out to train, how many of them are finished (completed or diverged) with the config they
    were planned with, and the run keys of the others (failed: those whose last try failed).
    Runs recorded but never planned count as planned and finished."""
    planned = read_plan(out, experiment)
    latest = {run_key(r["name"], r["seed"]): r for r in runs}
    pending = [key for key, config in planned.items() if not finished(latest.get(key), config)]
    failed = [key for key in pending if latest.get(key, {}).get("status") == "failed"]
    total = len(set(planned) | {k for k, r in latest.items() if r["status"] in ("completed", "diverged")})
    return {"planned": total, "finished": total - len(pending), "pending": pending, "failed": failed}


# ---------------------------------------------------------------------------
# Writing

def _json_safe(value):
    """NaN and infinity become null, so the file is standard JSON that loads anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(value) -> str:
    return json.dumps(_json_safe(value), indent=1, allow_nan=False)


def write_record(out: str, experiment: str, run: dict) -> str:
    path = record_path(out, experiment, run["name"], run["seed"])
    atomic_write_text(path, to_json(run))
    return path


def _csv(runs: list) -> str:
    buf = io.StringIO()
    param_keys = sorted({k for run in runs for k in run["params"]})
    writer = csv.writer(buf)
    writer.writerow(["name", *param_keys, "seed", "status", "epochs_completed", "final_loss",
                     "final_train_acc", "final_val_acc", "best_val_acc", "test_acc", "best_epoch",
                     "test_acc_at_best"])
    for run in runs:
        h = run["history"]
        last = lambda key: "" if not h[key] or h[key][-1] is None else h[key][-1]
        params = [run["params"].get(k, run.get("config", {}).get(k, "")) for k in param_keys]  # a plain run's lr too
        writer.writerow([run["name"], *params, run["seed"],
                         run["status"], len(h["loss"]), last("loss"), last("train_acc"), last("val_acc"),
                         "" if run.get("best_val_acc") is None else run["best_val_acc"],
                         "" if run.get("test_acc") is None else run["test_acc"],
                         "" if run.get("best_epoch") is None else run["best_epoch"],
                         "" if run.get("test_acc_at_best") is None else run["test_acc_at_best"]])
    return buf.getvalue()


def write_results(out: str, experiment: str, order: list | None = None) -> dict:
    """Rebuild results/<experiment>.json and .csv from every run recorded so far, under a
    lock so that two processes finishing at once cannot write an older view last."""
    from core import stats
    with locked(os.path.join(out, "results", f".{experiment}.lock")):
        remove_left_behind(merged_paths(out, experiment))
        results = read_results(out, experiment, order)
        results["summary"], results["best"] = stats.summarize(results)
        results["progress"] = progress(out, experiment, results["runs"])
        if stats.is_tuned(results):  # --tune-lr: each setting's rates, and the ranking at the fixed rates
            results["tuning"] = stats.tuning(results)
            chosen = {s: t["chosen_lr"] for s, t in results["tuning"].items()}
            for run in results["runs"]:
                run["at_chosen_lr"] = stats.lr_of(run) == chosen[stats.setting_of(run)]
            results["fixed"] = dict(zip(("summary", "best"), stats.summarize(stats.at_rates(results, "own"))))
        atomic_write_text(results_path(out, experiment), to_json(results))
        atomic_write_text(csv_path(out, experiment), _csv(results["runs"]))
    return results


# ---------------------------------------------------------------------------
# The table a sweep prints

def table(runs: list) -> str:
    rows = [("run", "hyperparameters", "seed", "status", "best val acc", "test acc")]
    for run in runs:
        params = ", ".join(f"{k}={fmt(v)}" for k, v in run["params"].items())
        best, test, status = run.get("best_val_acc"), run.get("test_acc"), run["status"]
        if status == "diverged":
            status = f"diverged at epoch {run.get('epochs_completed', len(run['history']['loss'])) + 1}"
        rows.append((run["name"], params, str(run["seed"]), status,
                     "-" if best is None else f"{100 * best:.2f}%",
                     "-" if test is None else f"{100 * test:.2f}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
