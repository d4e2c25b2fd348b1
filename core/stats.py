"""Small-sample statistics in numpy: Student-t intervals and paired comparisons.

Repeats of a setting with different seeds are few (3 to 10), so intervals use
Student's t, not the normal approximation. The t distribution's CDF comes from
the regularised incomplete beta function (a continued fraction, as in
Numerical Recipes, section 6.4); quantiles from bisection on it.
"""
import math

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (q in (0.5, 1)), by bisection on the CDF."""
    target = 2.0 * (1.0 - q)  # two-sided tail probability at the quantile
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf_two_sided(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def describe(values) -> dict:
    """n, mean, sample std and t-based 95% interval of the mean (None where n is too small)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = float(x.std(ddof=1))
    half = t_ppf(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired_comparison(a, b) -> dict:
    """Paired t-test of a - b over shared seeds: mean difference, its 95% interval and
    the two-sided p-value (None where fewer than two pairs, or every difference is equal)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    out = {"n": n, "mean_diff": float(d.mean()) if n else None, "ci95": None, "p_value": None}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd <= 1e-9 * max(float(np.abs(d).max()), 1e-12):
        # equal differences (up to float rounding: accuracies are counts / N): no spread to test
        return out
    se = sd / math.sqrt(n)
    half = t_ppf(0.975, n - 1) * se
    out["ci95"] = [out["mean_diff"] - half, out["mean_diff"] + half]
    out["p_value"] = t_sf_two_sided(out["mean_diff"] / se, n - 1)
    return out


def summarize(results: dict) -> tuple:
    """(summary rows, best) of a results file: per setting, test and best validation accuracy
    over its seeds (mean, std, t interval, n) and a paired comparison of test accuracy
    with the best setting over the seeds both share (rows), and best = {"setting",
    "at_edge"} (None when nothing completed). The best setting is the one with
    the highest mean best validation accuracy: chosen on validation, judged on test.
    A tuned sweep (--tune-lr) is summarised at each setting's chosen rate (row "lr")."""
    if is_tuned(results):
        rows, best = summarize(at_rates(results))
        table = tuning(results)
        for row in rows:
            row["lr"] = table[row["setting"]]["chosen_lr"]
        return rows, best
    settings = {}
    for run in results["runs"]:
        settings.setdefault(run["name"], []).append(run)
    rows = []
    for name, runs in settings.items():
        done = [r for r in runs if r["status"] == "completed"]
        test, val = describe([r["test_acc"] for r in done]), describe([r["best_val_acc"] for r in done])
        rows.append({"setting": name, "params": runs[0]["params"], "n": test["n"],
                     "runs": len(runs), "diverged": sum(r["status"] == "diverged" for r in runs),
                     "failed": sum(r["status"] == "failed" for r in runs),
                     "test_acc_mean": test["mean"], "test_acc_std": test["std"], "test_acc_ci95": test["ci95"],
                     "best_val_acc_mean": val["mean"], "best_val_acc_std": val["std"],
                     "best_val_acc_ci95": val["ci95"]})
    ranked = [r for r in rows if r["best_val_acc_mean"] is not None]
    if not ranked:
        return rows, None
    best = max(ranked, key=lambda r: r["best_val_acc_mean"])
    best_tests = {r["seed"]: r["test_acc"] for r in settings[best["setting"]] if r["status"] == "completed"}
    for row in rows:
        mine = {r["seed"]: r["test_acc"] for r in settings[row["setting"]] if r["status"] == "completed"}
        shared = sorted(set(mine) & set(best_tests))
        row["vs_best"] = paired_comparison([mine[s] for s in shared], [best_tests[s] for s in shared])
        row["is_best"] = row is best
    return rows, {"setting": best["setting"], "at_edge": _at_edge(rows, best)}


def _at_edge(rows: list, best: dict) -> bool:
    """True when the sweep varies one number and the best value is its smallest or largest:
    the optimum may lie outside the range, which should be widened."""
    keys = {tuple(r["params"]) for r in rows}
    if len(keys) != 1 or len(next(iter(keys))) != 1 or len(rows) < 3:
        return False
    key = next(iter(keys))[0]
    values = [r["params"][key] for r in rows]
    if not all(isinstance(v, (int, float)) for v in values):
        return False
    return best["params"][key] in (min(values), max(values))


# ---------------------------------------------------------------------------
# Tuned sweeps (--tune-lr): each setting at its own best learning rate

def lr_of(run: dict):
    return run.get("config", {}).get("lr", run["params"].get("lr"))


def setting_of(run: dict) -> str:
    """The setting a run belongs to: a tuned run's, else its own name (a run at its setting's own rate)."""
    return run["tune"]["setting"] if isinstance(run.get("tune"), dict) else run["name"]


def is_tuned(results: dict) -> bool:
    return any(isinstance(run.get("tune"), dict) for run in results["runs"])


def tuning(results: dict) -> dict:
    """setting -> {"own_lr", "rates": [{"lr", "n", "best_val_acc_mean", "test_acc_mean"}] (ascending),
    "chosen_lr", "at_edge"}: the rate with the highest mean best validation accuracy over its
    completed seeds (ties: the smaller rate), chosen on validation only; at_edge where it is the
    smallest or largest of two or more rates tried."""
    by_setting = {}
    for run in results["runs"]:
        by_setting.setdefault(setting_of(run), []).append(run)
    table = {}
    for setting, runs in by_setting.items():
        tuned = [r["tune"] for r in runs if isinstance(r.get("tune"), dict)]
        own = tuned[0]["own_lr"] if tuned else lr_of(runs[0])
        rates = []
        for lr in sorted({lr_of(r) for r in runs}):
            done = [r for r in runs if lr_of(r) == lr and r["status"] == "completed"]
            val, test = describe([r["best_val_acc"] for r in done]), describe([r["test_acc"] for r in done])
            rates.append({"lr": lr, "n": val["n"], "best_val_acc_mean": val["mean"], "test_acc_mean": test["mean"]})
        scored = [r for r in rates if r["best_val_acc_mean"] is not None]
        # means equal but for float rounding (accuracies are counts / N) tie, and go to the smaller rate
        chosen = max(scored, key=lambda r: (round(r["best_val_acc_mean"], 9), -r["lr"]))["lr"] if scored else None
        table[setting] = {"own_lr": own, "rates": rates, "chosen_lr": chosen,
                          "at_edge": chosen is not None and len(rates) > 1 and chosen in (rates[0]["lr"],
                                                                                         rates[-1]["lr"])}
    return table


def at_rates(results: dict, which: str = "chosen") -> dict:
    """A results dict of each setting's runs at its chosen rate (which="chosen") or at its own,
    un-tuned rate (which="own"), named after the setting and with the setting's own params, so
    that summarize, plots and tables treat it as an ordinary sweep."""
    table = tuning(results)
    target = {s: t["own_lr"] if which == "own" or t["chosen_lr"] is None else t["chosen_lr"] for s, t in table.items()}
    present = {(setting_of(r), lr_of(r)) for r in results["runs"]}
    runs = []
    for run in results["runs"]:
        setting = setting_of(run)
        if lr_of(run) == target[setting] or (which == "chosen" and (setting, target[setting]) not in present):
            params = run["tune"]["params"] if isinstance(run.get("tune"), dict) else run["params"]
            runs.append({**{k: v for k, v in run.items() if k != "tune"}, "name": setting, "params": params,
                         "run_name": run["name"]})
    return {**results, "runs": runs}
