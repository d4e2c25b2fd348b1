"""stats.py (Student-t quantiles and tails, the incomplete beta function, describe,
paired comparisons, the per-setting summary of a results file) and the sweep's use of
it with --seeds: checkpoints per seed, the summary in the results file, the best
setting and the edge warning on stdout, the hyperparameter plot.

Reference values come from printed t tables and from closed forms of the t
distribution for small integer df, never from stats.py itself."""
import math
import os

import numpy as np
import pytest
import torch

import data
from core import stats
import train
from conftest import as_group, real_train_run, fabricated, load_results, one_batch, run_script, tiny_argv

# ---------------------------------------------------------------------------
# Independent references: closed-form two-sided tails and quantiles of Student's t


def two_sided_p_closed_form(t, df):
    """P(|T| >= |t|) from the textbook closed forms of the t CDF for df = 1, 2, 3, 5."""
    t = abs(t)
    if df == 1:
        return 1 - 2 / math.pi * math.atan(t)
    if df == 2:
        return 1 - t / math.sqrt(2 + t * t)
    if df == 3:
        x = t / math.sqrt(3)
        return 1 - 2 / math.pi * (x / (1 + x * x) + math.atan(x))
    if df == 5:
        x = t / math.sqrt(5)
        u = 1 + x * x
        return 1 - 2 / math.pi * (x / u * (1 + 2 / (3 * u)) + math.atan(x))
    raise ValueError(df)


def t975_df1():
    """t_{0.975} for df = 1 (a Cauchy distribution): tan(pi * (0.975 - 1/2))."""
    return math.tan(math.pi * 0.475)


# ---------------------------------------------------------------------------
# t quantiles and tails


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706),
                                          (9, 2.2622), (10, 2.2281), (30, 2.0423)])
def test_t_ppf_matches_the_printed_t_table_at_0975(df, expected):
    assert stats.t_ppf(0.975, df) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("q, df, expected", [(0.95, 10, 1.8125), (0.995, 4, 4.6041), (0.9, 1, 3.0777),
                                             (0.95, 2, 2.9200)])
def test_t_ppf_at_other_levels(q, df, expected):
    assert stats.t_ppf(q, df) == pytest.approx(expected, abs=1e-3)


def test_t_ppf_df1_is_the_cauchy_quantile():
    assert stats.t_ppf(0.975, 1) == pytest.approx(t975_df1(), rel=1e-8)


def test_t_ppf_approaches_the_normal_quantile_for_large_df():
    assert stats.t_ppf(0.975, 10_000) == pytest.approx(1.95996, abs=1e-3)


@pytest.mark.parametrize("df", [1, 3, 7, 20])
@pytest.mark.parametrize("q", [0.6, 0.9, 0.975, 0.999])
def test_t_ppf_inverts_the_two_sided_tail(q, df):
    assert stats.t_sf_two_sided(stats.t_ppf(q, df), df) == pytest.approx(2 * (1 - q), rel=1e-6)


def test_t_sf_two_sided_reference_value():
    assert stats.t_sf_two_sided(2.0, 5) == pytest.approx(0.10194, abs=1e-5)
    assert stats.t_sf_two_sided(-2.0, 5) == pytest.approx(0.10194, abs=1e-5)  # two-sided: symmetric


@pytest.mark.parametrize("df", [1, 2, 3, 5])
@pytest.mark.parametrize("t", [0.1, 0.5, 1.0, 2.0, 2.9755, 4.0, 10.0])
def test_t_sf_two_sided_matches_closed_forms(t, df):
    assert stats.t_sf_two_sided(t, df) == pytest.approx(two_sided_p_closed_form(t, df), rel=1e-9, abs=1e-12)


def test_t_sf_two_sided_limits():
    for df in (1, 4, 30):
        assert stats.t_sf_two_sided(0.0, df) == pytest.approx(1.0, abs=1e-12)
        assert stats.t_sf_two_sided(1e4, df) < 1e-3
        assert stats.t_sf_two_sided(float("inf"), df) == 0.0
    assert stats.t_sf_two_sided(100.0, 5) < 1e-8
    # decreasing in |t|
    ps = [stats.t_sf_two_sided(t, 6) for t in np.linspace(0, 8, 30)]
    assert all(a > b for a, b in zip(ps, ps[1:]))


# ---------------------------------------------------------------------------
# Regularised incomplete beta


@pytest.mark.parametrize("x", [0.0, 1e-6, 0.1, 0.3, 0.5, 0.77, 0.999, 1.0])
def test_betainc_uniform_is_identity(x):
    assert stats.betainc(1.0, 1.0, x) == pytest.approx(x, abs=1e-12)


@pytest.mark.parametrize("a, b", [(0.5, 2.5), (2.0, 3.0), (1.5, 0.5), (7.0, 2.0), (0.3, 0.3)])
@pytest.mark.parametrize("x", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_betainc_symmetry(a, b, x):
    assert stats.betainc(a, b, x) == pytest.approx(1 - stats.betainc(b, a, 1 - x), abs=1e-12)


@pytest.mark.parametrize("a, b", [(2, 3), (1, 4), (3, 1), (4, 5)])
@pytest.mark.parametrize("x", [0.1, 0.45, 0.8])
def test_betainc_integer_parameters_match_the_binomial_sum(a, b, x):
    # I_x(a, b) = P(Binomial(a + b - 1, x) >= a) for integer a, b
    m = a + b - 1
    expected = sum(math.comb(m, j) * x ** j * (1 - x) ** (m - j) for j in range(a, m + 1))
    assert stats.betainc(a, b, x) == pytest.approx(expected, rel=1e-10)


def test_betainc_bounds_and_monotonicity():
    assert stats.betainc(2.5, 0.5, 0.0) == 0.0 and stats.betainc(2.5, 0.5, 1.0) == 1.0
    assert stats.betainc(2.5, 0.5, -0.2) == 0.0 and stats.betainc(2.5, 0.5, 1.3) == 1.0
    values = [stats.betainc(2.5, 0.5, x) for x in np.linspace(0.01, 0.99, 40)]
    assert all(0 < v < 1 for v in values)
    assert all(a < b for a, b in zip(values, values[1:]))


# ---------------------------------------------------------------------------
# describe


def test_describe_one_to_five():
    d = stats.describe([1, 2, 3, 4, 5])
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(3.0)
    assert d["std"] == pytest.approx(math.sqrt(2.5), rel=1e-12)  # 1.5811, ddof=1
    assert d["std"] == pytest.approx(1.5811, abs=1e-4)
    half = 2.7764 * 1.5811 / math.sqrt(5)
    assert d["ci95"] == pytest.approx([3 - half, 3 + half], abs=1e-3)
    assert d["ci95"] == pytest.approx([1.0368, 4.9632], abs=1e-4)


def test_describe_from_first_principles():
    values = [0.61, 0.58, 0.66, 0.70]
    mean = sum(values) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    half = 3.1824 * std / 2  # t_{0.975, 3} from the table, sqrt(4) = 2
    d = stats.describe(values)
    assert (d["n"], d["mean"], d["std"]) == (4, pytest.approx(mean), pytest.approx(std))
    assert d["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-4)


def test_describe_two_values_uses_the_cauchy_quantile():
    d = stats.describe([0.5, 0.7])
    std = math.sqrt(0.02)
    half = t975_df1() * std / math.sqrt(2)
    assert d["std"] == pytest.approx(std)
    assert d["ci95"] == pytest.approx([0.6 - half, 0.6 + half], rel=1e-7)


def test_describe_small_samples_and_none():
    assert stats.describe([0.42]) == {"n": 1, "mean": pytest.approx(0.42), "std": None, "ci95": None}
    assert stats.describe([]) == {"n": 0, "mean": None, "std": None, "ci95": None}
    assert stats.describe([None, None]) == {"n": 0, "mean": None, "std": None, "ci95": None}
    assert stats.describe([None, 0.3, None]) == {"n": 1, "mean": pytest.approx(0.3), "std": None, "ci95": None}
    with_none = stats.describe([1, None, 3, None, 5])
    assert with_none["n"] == 3
    assert with_none["mean"] == pytest.approx(3.0)
    assert with_none["std"] == pytest.approx(2.0)
    assert with_none["ci95"] == pytest.approx([3 - 4.3027 * 2 / math.sqrt(3), 3 + 4.3027 * 2 / math.sqrt(3)],
                                              abs=1e-3)


def test_describe_constant_values_have_zero_width_interval():
    d = stats.describe([0.25, 0.25, 0.25])
    assert d["std"] == 0.0 and d["ci95"] == [0.25, 0.25]


# ---------------------------------------------------------------------------
# paired_comparison


def test_paired_comparison_reference_case():
    # d = [0.5, 0.6, 0.1, 1.0]: mean 0.55, sd sqrt(0.41 / 3), t = 2.9755 on 3 df, p = 0.0588
    p = stats.paired_comparison([0.5, 0.6, 0.1, 1.0], [0.0, 0.0, 0.0, 0.0])
    assert p["n"] == 4
    assert p["mean_diff"] == pytest.approx(0.55)
    assert p["p_value"] == pytest.approx(0.0588, abs=1e-4)
    sd = math.sqrt(0.41 / 3)
    half = 3.1824 * sd / 2
    assert p["ci95"] == pytest.approx([0.55 - half, 0.55 + half], abs=1e-3)
    # the interval contains 0 exactly when p > 0.05
    assert p["ci95"][0] < 0 < p["ci95"][1]


def test_paired_comparison_from_first_principles():
    a = [0.71, 0.64, 0.69, 0.75, 0.66]
    b = [0.62, 0.60, 0.66, 0.70, 0.65]
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    p = stats.paired_comparison(a, b)
    assert p["n"] == 5
    assert p["mean_diff"] == pytest.approx(mean)
    assert p["p_value"] == pytest.approx(stats.t_sf_two_sided(t, n - 1))
    # df = 4 has a closed form too: 1 - x (3/2 - x^2/2) with x = t / sqrt(t^2 + 4)
    x = t / math.sqrt(t * t + 4)
    assert p["p_value"] == pytest.approx(1 - x * (1.5 - 0.5 * x * x), rel=1e-8)
    half = 2.7764 * sd / math.sqrt(n)
    assert p["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-4)
    assert p["ci95"][0] > 0  # clearly positive here: p < 0.05
    assert p["p_value"] < 0.05
    # swapping the sides flips the difference, not the p-value
    q = stats.paired_comparison(b, a)
    assert q["mean_diff"] == pytest.approx(-mean)
    assert q["p_value"] == pytest.approx(p["p_value"])
    assert q["ci95"] == pytest.approx([-p["ci95"][1], -p["ci95"][0]])


def test_paired_comparison_two_pairs_closed_form():
    p = stats.paired_comparison([0.60, 0.70], [0.50, 0.65])  # d = [0.10, 0.05]
    mean, sd = 0.075, math.sqrt(2) * 0.025
    t = mean / (sd / math.sqrt(2))  # = 3
    assert t == pytest.approx(3.0)
    assert p["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(3.0), rel=1e-8)  # 0.2048
    half = t975_df1() * sd / math.sqrt(2)
    assert p["ci95"] == pytest.approx([mean - half, mean + half], rel=1e-7)


def test_paired_comparison_degenerate_cases():
    same = stats.paired_comparison([0.5, 0.75, 0.625], [0.25, 0.5, 0.375])  # every difference exactly 0.25
    assert same["n"] == 3 and same["mean_diff"] == pytest.approx(0.25)
    assert same["ci95"] is None and same["p_value"] is None
    zero = stats.paired_comparison([0.3, 0.4], [0.3, 0.4])
    assert zero["mean_diff"] == 0.0 and zero["ci95"] is None and zero["p_value"] is None
    one = stats.paired_comparison([0.7], [0.5])
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(0.2)
    assert one["ci95"] is None and one["p_value"] is None
    none = stats.paired_comparison([], [])
    assert none == {"n": 0, "mean_diff": None, "ci95": None, "p_value": None}


def test_paired_comparison_equal_differences_of_accuracies_are_not_significant():
    """Accuracies are counts over a test set (k / 1000): setting a classifies exactly 100
    more test images correctly than b on every seed, so every paired difference is 0.1 and
    the documented answer is ci95 = p = None ("every difference is equal"). The float
    subtraction leaves differences 1 ulp apart, and an exact `sd == 0` test misses it."""
    a = [300 / 1000, 400 / 1000, 500 / 1000]
    b = [200 / 1000, 300 / 1000, 400 / 1000]
    p = stats.paired_comparison(a, b)
    assert p["mean_diff"] == pytest.approx(0.1)
    assert p["ci95"] is None and p["p_value"] is None, p


# ---------------------------------------------------------------------------
# summarize


def run(name, params, seed, status="completed", test=None, val=None):
    done = status == "completed"
    return {"name": name, "params": params, "seed": seed, "status": status,
            "test_acc": test if done else None, "best_val_acc": val if done else (0.1 if status == "diverged"
                                                                                   else None),
            "history": {"loss": [], "train_acc": [], "val_acc": []}}


def test_summarize_hand_made_results():
    results = {"experiment": "activation", "runs": [
        run("a", {"activation": "relu"}, 0, test=0.50, val=0.70),
        run("a", {"activation": "relu"}, 1, test=0.55, val=0.72),
        run("a", {"activation": "relu"}, 2, test=0.60, val=0.74),
        run("b", {"activation": "tanh"}, 1, test=0.40, val=0.80),  # the best single run, not the best mean
        run("b", {"activation": "tanh"}, 2, test=0.50, val=0.60),
        run("b", {"activation": "tanh"}, 3, test=0.45, val=0.62),
        run("c", {"activation": "elu"}, 0, test=0.30, val=0.50),
        run("c", {"activation": "elu"}, 1, status="diverged"),
        run("c", {"activation": "elu"}, 2, status="failed"),
        run("d", {"activation": "gelu"}, 0, status="failed"),
    ]}
    rows, best = stats.summarize(results)
    rows = {r["setting"]: r for r in rows}
    assert list(rows) == ["a", "b", "c", "d"]
    # best by the highest MEAN best validation accuracy: a (0.72) over b (0.673)
    assert best == {"setting": "a", "at_edge": False}
    assert rows["a"]["is_best"] is True and not any(rows[s]["is_best"] for s in "bcd")

    a = rows["a"]
    assert (a["n"], a["runs"], a["diverged"], a["failed"]) == (3, 3, 0, 0)
    assert a["params"] == {"activation": "relu"}
    assert a["test_acc_mean"] == pytest.approx(0.55)
    assert a["test_acc_std"] == pytest.approx(0.05)
    half = 4.3027 * 0.05 / math.sqrt(3)
    assert a["test_acc_ci95"] == pytest.approx([0.55 - half, 0.55 + half], abs=1e-4)
    assert a["best_val_acc_mean"] == pytest.approx(0.72)
    assert a["best_val_acc_std"] == pytest.approx(0.02)
    assert a["best_val_acc_ci95"] == pytest.approx([0.72 - 4.3027 * 0.02 / math.sqrt(3),
                                                    0.72 + 4.3027 * 0.02 / math.sqrt(3)], abs=1e-4)
    assert a["vs_best"]["mean_diff"] == 0.0 and a["vs_best"]["p_value"] is None and a["vs_best"]["n"] == 3

    # b against a over the seeds both have, 1 and 2 only: d = [0.40 - 0.55, 0.50 - 0.60]
    b = rows["b"]
    assert b["n"] == 3 and b["test_acc_mean"] == pytest.approx(0.45)
    vs = b["vs_best"]
    assert vs["n"] == 2
    assert vs["mean_diff"] == pytest.approx(-0.125)
    d = [-0.15, -0.10]
    sd = abs(d[0] - d[1]) / math.sqrt(2)
    t = -0.125 / (sd / math.sqrt(2))  # = -5
    assert t == pytest.approx(-5.0)
    assert vs["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(5.0), rel=1e-7)  # 0.1257
    half = t975_df1() * sd / math.sqrt(2)
    assert vs["ci95"] == pytest.approx([-0.125 - half, -0.125 + half], rel=1e-6)

    # c: the diverged and failed seeds count apart, not in n; one shared seed, no p-value
    c = rows["c"]
    assert (c["n"], c["runs"], c["diverged"], c["failed"]) == (1, 3, 1, 1)
    assert c["test_acc_mean"] == pytest.approx(0.30) and c["best_val_acc_mean"] == pytest.approx(0.50)
    assert c["test_acc_std"] is None and c["test_acc_ci95"] is None
    assert c["vs_best"]["n"] == 1 and c["vs_best"]["mean_diff"] == pytest.approx(-0.20)
    assert c["vs_best"]["p_value"] is None and c["vs_best"]["ci95"] is None

    # d: nothing completed
    d_row = rows["d"]
    assert (d_row["n"], d_row["runs"], d_row["failed"]) == (0, 1, 1)
    assert d_row["test_acc_mean"] is None and d_row["best_val_acc_mean"] is None
    assert d_row["vs_best"]["n"] == 0 and d_row["vs_best"]["mean_diff"] is None


def test_summarize_nothing_completed():
    rows, best = stats.summarize({"experiment": "x", "runs": [run("a", {"lr": 0.1}, 0, status="diverged"),
                                                             run("b", {"lr": 1.0}, 0, status="failed")]})
    assert best is None
    assert [(r["setting"], r["n"], r["diverged"], r["failed"]) for r in rows] == [("a", 0, 1, 0), ("b", 0, 0, 1)]


def lr_results(best_lr, lrs=(1e-3, 1e-5, 1e-4)):
    runs = []
    for lr in lrs:  # deliberately not in sorted order
        for seed in (0, 1):
            val = 0.6 if lr == best_lr else 0.4
            runs.append(run(f"lr_{lr:g}", {"lr": lr}, seed, test=val - 0.05 + 0.01 * seed, val=val))
    return {"experiment": "learning_rate", "runs": runs}


@pytest.mark.parametrize("best_lr, edge", [(1e-5, True), (1e-3, True), (1e-4, False)])
def test_summarize_at_edge_of_a_numeric_sweep(best_lr, edge):
    _, best = stats.summarize(lr_results(best_lr))
    assert best == {"setting": f"lr_{best_lr:g}", "at_edge": edge}


def test_at_edge_needs_three_settings():
    _, best = stats.summarize(lr_results(1e-5, lrs=(1e-5, 1e-4)))
    assert best == {"setting": "lr_1e-05", "at_edge": False}


def test_at_edge_false_for_names_and_for_two_numbers():
    runs = [run(n, {"activation": n}, s, test=0.5, val=0.9 if n == "elu" else 0.5)
            for n in ("elu", "relu", "tanh") for s in (0, 1)]
    _, best = stats.summarize({"experiment": "activation", "runs": runs})
    assert best == {"setting": "elu", "at_edge": False}  # first of the list, but not a number
    runs = [run(f"l1_{l1:g}", {"l1": l1, "l2": 0.0}, 0, test=0.5, val=0.9 if l1 == 0 else 0.5)
            for l1 in (0.0, 1e-6, 1e-4)]
    _, best = stats.summarize({"experiment": "weight_regularization", "runs": runs})
    assert best == {"setting": "l1_0", "at_edge": False}  # smallest l1, but the sweep varies two numbers


# ---------------------------------------------------------------------------
# --seeds end to end


SUMMARY_KEYS = {"setting", "n", "test_acc_mean", "test_acc_std", "test_acc_ci95", "best_val_acc_mean",
                "best_val_acc_std", "best_val_acc_ci95", "vs_best"}


def test_seeds_real_runs_checkpoints_summary_and_best(mnist_dir, tmp_path, monkeypatch):
    real = real_train_run()
    calls = []

    def spy(config, split, num_classes, resume_path=None, desc="run"):
        calls.append((dict(config), split, split.train.indices.clone(), split.val.indices.clone()))
        return real(config, split, num_classes, resume_path, desc)

    monkeypatch.setattr(train, "train_group", as_group(spy))
    # 16 training images, one batch (one step a run): the seeds and the summary over them are the subject
    code, out, err = run_script("main_learning_rate",
                                ["--values", "1e-4", "3e-4", "--seeds", "2", *one_batch(tiny_argv(mnist_dir, tmp_path))])
    assert code == 0, err

    models = tmp_path / "models" / "learning_rate"
    assert sorted(p for p in os.listdir(models) if not p.endswith(".best.pt")) == [
        "lr_0.0001_seed0.pt", "lr_0.0001_seed1.pt", "lr_0.0003_seed0.pt", "lr_0.0003_seed1.pt"]
    results = load_results(tmp_path, "learning_rate")
    assert sorted((r["name"], r["seed"]) for r in results["runs"]) == [
        ("lr_0.0001", 0), ("lr_0.0001", 1), ("lr_0.0003", 0), ("lr_0.0003", 1)]
    runs = {(r["name"], r["seed"]): r for r in results["runs"]}
    assert all(r["status"] == "completed" for r in runs.values())

    # the seeds of a setting: different initialisation and data order, the same split
    for name in ("lr_0.0001", "lr_0.0003"):
        a, b = runs[(name, 0)], runs[(name, 1)]
        assert a["history"] != b["history"]
        assert a["history"]["loss"] != b["history"]["loss"]
        assert {k: v for k, v in a["config"].items() if k != "seed"} == \
            {k: v for k, v in b["config"].items() if k != "seed"}
        ckpt0 = torch.load(models / f"{name}_seed0.pt", weights_only=True, map_location="cpu")
        ckpt1 = torch.load(models / f"{name}_seed1.pt", weights_only=True, map_location="cpu")
        assert (ckpt0["config"]["seed"], ckpt1["config"]["seed"]) == (0, 1)
        assert ckpt0["history"] == a["history"] and ckpt1["history"] == b["history"]
        first = next(iter(ckpt0["model"]))
        assert not torch.equal(ckpt0["model"][first], ckpt1["model"][first])  # different weights
    assert len(calls) == 4
    assert sorted((c[0]["lr"], c[0]["seed"]) for c in calls) == [(1e-4, 0), (1e-4, 1), (3e-4, 0), (3e-4, 1)]
    split = calls[0][1]
    for config, s, train_idx, val_idx in calls:
        assert s is split
        assert torch.equal(train_idx, calls[0][2]) and torch.equal(val_idx, calls[0][3])
    assert len(calls[0][2]) == 16 and len(calls[0][3]) == 16
    # the study's split of this MNIST's 1000 training images (--regime subset), its training and validation parts
    # in their places (both 16 images long here)
    train_idx, val_idx = data.split_indices(1000, "subset", 16, 16)
    assert torch.equal(calls[0][2], train_idx) and torch.equal(calls[0][3], val_idx)

    # the summary over seeds
    summary = results["summary"]
    assert len(summary) == 2
    rows = {r["setting"]: r for r in summary}
    assert set(rows) == {"lr_0.0001", "lr_0.0003"}
    for name, row in rows.items():
        assert SUMMARY_KEYS <= set(row)
        assert {"mean_diff", "ci95", "p_value"} <= set(row["vs_best"])
        assert row["n"] == 2
        tests = [runs[(name, s)]["test_acc"] for s in (0, 1)]
        vals = [runs[(name, s)]["best_val_acc"] for s in (0, 1)]
        assert row["test_acc_mean"] == pytest.approx(np.mean(tests))
        assert row["test_acc_std"] == pytest.approx(np.std(tests, ddof=1), abs=1e-12)
        assert row["best_val_acc_mean"] == pytest.approx(np.mean(vals))
        half = t975_df1() * np.std(vals, ddof=1) / math.sqrt(2)
        assert row["best_val_acc_ci95"] == pytest.approx([np.mean(vals) - half, np.mean(vals) + half], abs=1e-9)

    # the best: highest mean best validation accuracy, the first such in sweep order on a tie
    means = [(np.mean([runs[(n, s)]["best_val_acc"] for s in (0, 1)]), n) for n in ("lr_0.0001", "lr_0.0003")]
    expected = means[0][1] if means[0][0] >= means[1][0] else means[1][1]
    assert results["best"] == {"setting": expected, "at_edge": False}
    other = "lr_0.0003" if expected == "lr_0.0001" else "lr_0.0001"
    assert rows[expected]["vs_best"]["mean_diff"] == 0.0
    assert rows[other]["vs_best"]["n"] == 2
    assert rows[other]["vs_best"]["mean_diff"] == pytest.approx(
        np.mean([runs[(other, s)]["test_acc"] - runs[(expected, s)]["test_acc"] for s in (0, 1)]))
    assert f"best by mean validation accuracy: {expected}" in out
    assert "edge of the swept range" not in out
    # the table names each run with its seed, and the numeric sweep gets its hyperparameter plot
    table = [line.split() for line in out.splitlines() if line.startswith("lr_0.000") and "completed" in line]
    assert sorted((row[0], row[2]) for row in table) == [("lr_0.0001", "0"), ("lr_0.0001", "1"),
                                                         ("lr_0.0003", "0"), ("lr_0.0003", "1")]
    assert (tmp_path / "images" / "learning_rate_hparam.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------
# --seeds with fabricated outcomes: a known best


LRS = ("1e-4", "3e-4", "1e-3")


@pytest.mark.parametrize("best, edge", [("1e-4", True), ("3e-4", False), ("1e-3", True)])
def test_seeds_best_and_edge_warning(mnist_dir, tmp_path, monkeypatch, best, edge):
    table = {}
    for value in LRS:
        for seed in (0, 1):
            val = (0.70 if value == best else 0.40) + 0.02 * seed
            table[(float(value), seed)] = (val, val - 0.1)
    fake = fabricated(table, "lr")
    monkeypatch.setattr(train, "train_group", as_group(fake))
    code, out, err = run_script("main_learning_rate", ["--values", *LRS, "--seeds", "2",
                                                       *tiny_argv(mnist_dir, tmp_path)])
    assert code == 0, err
    assert len(fake.calls) == 6
    name = f"lr_{float(best):g}"
    results = load_results(tmp_path, "learning_rate")
    assert results["best"] == {"setting": name, "at_edge": edge}
    assert f"best by mean validation accuracy: {name}" in out
    assert ("it lies at the edge of the swept range" in out) is edge
    rows = {r["setting"]: r for r in results["summary"]}
    assert len(rows) == 3 and all(r["n"] == 2 for r in rows.values())
    assert rows[name]["best_val_acc_mean"] == pytest.approx(0.71)
    assert rows[name]["test_acc_mean"] == pytest.approx(0.61)
    for other in set(rows) - {name}:
        # every other setting trails the best by 0.3 on both seeds: equal differences
        assert rows[other]["vs_best"]["mean_diff"] == pytest.approx(-0.3)
    for value in LRS:
        for seed in (0, 1):
            assert (tmp_path / "models" / "learning_rate" / f"lr_{float(value):g}_seed{seed}.pt").exists()
    assert (tmp_path / "images" / "learning_rate_hparam.png").exists()


def test_no_hyperparameter_plot_for_activation(mnist_dir, tmp_path, monkeypatch):
    table = {(a, s): (0.5 + 0.1 * (a == "elu") + 0.01 * s, 0.45 + 0.01 * s) for a in ("relu", "elu") for s in (0, 1)}
    monkeypatch.setattr(train, "train_group", as_group(fabricated(table, "activation")))
    code, out, err = run_script("main_activation", ["--values", "relu", "elu", "--seeds", "2",
                                                    *tiny_argv(mnist_dir, tmp_path)])
    assert code == 0, err
    assert "best by mean validation accuracy: elu" in out
    assert "edge" not in out
    images = tmp_path / "images"
    assert (images / "activation_val_acc.png").exists() and (images / "activation_test_acc.png").exists()
    assert not (images / "activation_hparam.png").exists()
    assert load_results(tmp_path, "activation")["best"] == {"setting": "elu", "at_edge": False}
