"""The documentation (README.md and docs/*.md) against the code: docs/flags.md lists exactly
the flags of each script's --help; every command shown names a script of this repository with
flags its parser takes, and is run by a named test or by .ci/run; every relative link, anchor
and file name it mentions exists; README.md stays short and maps every page of docs/."""
import argparse
import ast
import glob
import importlib
import os
import re
import shlex

import pytest

from conftest import HANG, run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
DOCS = [README, *PAGES]
TRAINING = ["main_learning_rate.py", "main_optimizer.py", "main_weight_regularization.py", "main_activation.py",
            "main_dropout.py", "main_consolidated.py"]
EXPERIMENTS = tuple(s[len("main_"):-len(".py")] for s in TRAINING)

# Every command the documentation shows, and what runs it: a test (at a tiny size where the
# command trains, usually with training stubbed or on a few dozen images), or .ci/run. A
# command shown in README.md or docs/ that is missing here fails test_every_documented_command_is_run.
E2E, TUNE, REP, OUT = "tests/test_scripts_e2e.py::", "tests/test_tune_lr.py::", "tests/test_report.py::", \
    "tests/test_outputs_agree.py::"
EVAL, PAR, BENCH = "tests/test_evaluate.py::", "tests/test_parallel_runs.py::", "tests/test_bench.py::"
# trains two revisions for minutes: its test file checks the command line and the comparison, training nothing
COMPARE = "tests/test_compare_outputs.py::test_a_revision_that_is_no_commit_is_refused_in_one_sentence"
DEFAULT_SWEEP = ["tests/test_cli.py::test_default_values_give_the_documented_runs", E2E + "test_script_end_to_end"]
RUN_BY = {
    "./setup.sh": [".ci/run"],
    "main_activation.py --dataset fashion-mnist --quick": [".ci/run"],
    "-m pytest -q tests": [".ci/run"],
    '-m pytest -q -m "not slow" tests': [".ci/run"],  # a subset of the whole suite .ci/run runs
    "tests/mutants.py": ["tests/test_docs.py::test_the_mutation_check_runs"],
    "tests/peak_memory.py": ["tests/test_peak_memory.py::test_it_runs_pytest_and_states_the_peaks"],
    "tests/mutants.py --since 3d6a508 --sample 60":
        ["tests/test_mutants_tool.py::test_the_command_draws_a_sample_and_runs_nothing_with_list"],
    "tests/mutants.py --all --sample 40":
        ["tests/test_mutants_tool.py::test_the_command_draws_a_sample_and_runs_nothing_with_list"],
    "main_learning_rate.py": ["tests/test_cli.py::test_default_values_give_the_documented_runs",
                              E2E + "test_learning_rate_end_to_end"],
    "main_optimizer.py": DEFAULT_SWEEP,
    "main_weight_regularization.py": DEFAULT_SWEEP,
    "main_activation.py": DEFAULT_SWEEP,
    "main_dropout.py": DEFAULT_SWEEP,
    "main_consolidated.py": DEFAULT_SWEEP,
    "main_consolidated.py --from-results": [OUT + "test_from_results_refuses_an_unfinished_sweep_and_takes_it_when_told",
                                            REP + "test_consolidated_from_results_takes_each_best"],
    "main_consolidated.py --evaluate": [EVAL + "test_consolidated_evaluate_before_and_after_training"],
    "main_consolidated.py --from-results --tune-lr x0.3 x1 x3":
        ["tests/test_docs.py::test_the_consolidated_model_tunes_the_rate_of_the_combination"],
    "main_learning_rate.py --values 3e-5 1e-4 3e-4": [E2E + "test_seeds_repeat_every_setting"],
    "main_optimizer.py --values sgd:0.01 adagrad adam:3e-4": [E2E + "test_script_end_to_end"],
    "main_weight_regularization.py --values 0,0 5e-6,9.5e-5": [E2E + "test_script_end_to_end"],
    "main_activation.py --values relu leakyrelu gelu --seeds 5": [E2E + "test_script_end_to_end",
                                                                  E2E + "test_seeds_repeat_every_setting"],
    "main_dropout.py --values 0 0.25 --epochs 10": [E2E + "test_script_end_to_end"],
    "main_learning_rate.py --quick --epochs 1 --image-size 80": ["tests/test_cli.py::test_quick_preset_and_explicit_flags_win"],
    "main_activation.py --dataset fashion-mnist --quick --values elu --out /tmp/example":
        [E2E + "test_script_end_to_end", "tests/test_cli.py::test_quick_preset_and_explicit_flags_win"],
    "main_activation.py --dataset fashion-mnist --quick --out /tmp/quick":
        [E2E + "test_script_end_to_end", "tests/test_cli.py::test_quick_preset_and_explicit_flags_win"],
    "main_activation.py --dataset fashion-mnist --quick --precision fp32 --out /tmp/quick-fp32":
        [E2E + "test_script_end_to_end", "tests/test_cli.py::test_quick_preset_and_explicit_flags_win"],
    "main_activation.py --tune-lr x0.3 x1 x3": [TUNE + "test_a_plain_sweep_run_is_reused_at_its_own_rate"],
    "main_activation.py --tune-lr x0.3 x1 x3 --seeds 2": [TUNE + "test_each_setting_at_its_rate_chosen_on_validation"],
    "main_optimizer.py --tune-lr x0.1 x1": [TUNE + "test_the_optimizer_sweep_tunes_by_multiples_of_each_own_rate"],
    "main_weight_regularization.py --fuse 8": ["tests/test_kill_resume.py::test_a_fused_group_killed_resumes_exactly_with_another_k"],
    "main_dropout.py --seeds 3 --fuse auto":
        ["tests/test_gpu_paths.py::test_fuse_auto_takes_the_k_an_injected_timing_table_says_is_fastest",
         E2E + "test_seeds_repeat_every_setting"],
    "main_activation.py --values relu tanh": [PAR + "test_two_processes_on_one_out_keep_all_their_runs"],
    "main_activation.py --values elu sigmoid leakyrelu": [PAR + "test_two_processes_on_one_out_keep_all_their_runs"],
    "torchrun --nproc-per-node=4 main_dropout.py --seeds 3":
        [PAR + "test_torchrun_spreads_the_runs_two_per_rank_and_each_rank_fuses_its_share",
         E2E + "test_seeds_repeat_every_setting"],
    "torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=10.0.0.1:29500 "
    "--rdzv-id=alexnet-dropout main_dropout.py --strategy ddp":
        ["tests/test_distributed.py::test_two_gloo_processes_match_one_process"],
    "main_dropout.py --seeds 3 --shard ${SLURM_ARRAY_TASK_ID}/4 --out /shared/alexnet":
        [PAR + "test_shards_one_after_another_make_the_whole_sweep", E2E + "test_seeds_repeat_every_setting"],
    "main_weight_regularization.py --shard 1/2 --out /shared/alexnet": [PAR + "test_shards_one_after_another_make_the_whole_sweep"],
    "main_weight_regularization.py --shard 2/2 --out /shared/alexnet": [PAR + "test_shards_one_after_another_make_the_whole_sweep"],
    "main_learning_rate.py --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist":
        [E2E + "test_learning_rate_end_to_end"],
    "report.py": [REP + "test_report_sections_tables_plots_and_verdicts"],
    "report.py --out /shared/alexnet": [REP + "test_report_sections_tables_plots_and_verdicts"],
    "plotting.py": ["tests/test_plotting.py::test_main_redraws_from_results_files"],
    "plotting.py --tensorboard": ["tests/test_tensorboard.py::test_from_results_writes_the_same_runs_and_nothing_twice"],
    "main_activation.py --dataset fashion-mnist --quick --tensorboard --out /tmp/tbq":
        ["tests/test_tensorboard.py::test_each_fused_member_is_its_own_run_equal_to_its_record",
         E2E + "test_script_end_to_end", "tests/test_cli.py::test_quick_preset_and_explicit_flags_win"],
    "plotting.py --out runs learning_rate": ["tests/test_plotting.py::test_main_redraws_a_real_sweep"],
    "plotting.py weight_regularization --out /shared/alexnet": ["tests/test_plotting.py::test_main_redraws_a_real_sweep"],
    "evaluate.py models/activation/elu.pt": [EVAL + "test_evaluate_reproduces_the_recorded_accuracy_with_class_names"],
    "evaluate.py models/activation/elu.pt --images shoe.png": [EVAL + "test_images_are_predicted_with_top5_class_names"],
    "evaluate.py /tmp/example/models/activation/elu.pt --out /tmp/example":
        [EVAL + "test_evaluate_reproduces_the_recorded_accuracy_with_class_names"],
    "bench.py": [BENCH + "test_step_mode_writes_both_rates"],
    "bench.py --job": [BENCH + "test_job_mode_times_a_whole_run_both_ways"],
    "bench.py --fuse 1 2 4": [BENCH + "test_step_mode_times_each_fused_size"],
    "bench.py --device cpu --fuse 1 --steps 3 --rounds 2 --warmup 1": [BENCH + "test_step_mode_writes_both_rates"],
    "bench.py --fuse 1 2 4 8 16": [BENCH + "test_step_mode_times_each_fused_size"],
    "bench.py --steps 50 --rounds 3": [BENCH + "test_step_mode_writes_both_rates"],
    "bench.py --precision fp32 --steps 50 --rounds 3": [BENCH + "test_step_mode_writes_both_rates"],
    "bench.py --compile --steps 100 --rounds 3": [BENCH + "test_step_mode_writes_both_rates",
                                                  "tests/test_precision_compile.py::test_compile_flag_trains_through_torch_compile"],
    "gpu_check.py": ["tests/test_gpu_check.py::test_gpu_check_runs_end_to_end_at_a_tiny_size"],
    "gpu_check.py --data-dir /usr/share/datasets/fashion-mnist":
        ["tests/test_gpu_check.py::test_gpu_check_runs_end_to_end_at_a_tiny_size"],
    "tests/compare_outputs.py 922a8e1 fb39e4b": [COMPARE],
    "tests/compare_outputs.py main": [COMPARE],
    "tests/compare_outputs.py 922a8e1 --new trained_on/threads":
        ["tests/test_compare_outputs.py::test_the_command_line_s_new_fields_reach_the_comparison"],
}


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


# ---------------------------------------------------------------------------
# What --help says

def run_main(script: str, argv: list):
    """(exit code or None, stdout, stderr) of script's main(argv), in this process."""
    return run_script(script[:-len(".py")].replace("/", "."), argv)


def help_flags(script: str) -> set:
    code, out, err = run_main(script, ["--help"])
    assert code == 0, err
    # option lines start two spaces in: "  --values V [V ...]", "  -h, --help"; wrapped help text starts further in
    flags = {m.group(1) for m in re.finditer(r"^  (?:-\w, )?(--[a-z0-9][a-z0-9-]*)", out, re.M)}
    assert flags, f"no flags found in {script} --help"
    return flags - {"--help"}


def flag_tables() -> dict:
    """docs/flags.md: {section heading: {flag: its row}} for each '## ' section with a table."""
    sections = re.split(r"^## ", read(os.path.join(ROOT, "docs", "flags.md")), flags=re.M)[1:]
    tables = {}
    for section in sections:
        heading = section.splitlines()[0]
        rows = {}
        for line in section.splitlines():
            if line.startswith("| `--"):
                first = line.split("|")[1]
                for flag in re.findall(r"--[a-z0-9][a-z0-9-]*", first):
                    assert flag not in rows, f"{flag} has two rows under '## {heading}'"
                    rows[flag] = line
        if rows:
            tables[heading] = rows
    return tables


def scripts_of(heading: str) -> list:
    """The scripts a flags.md heading names in backticks: `main_*.py`, `report.py`, ..."""
    names = re.findall(r"`([\w*./-]+\.py)`", heading)
    scripts = sorted({rel(p) for name in names for p in glob.glob(os.path.join(ROOT, name))})
    assert scripts, f"flags.md heading '## {heading}' names no script in backticks"
    return scripts


def test_the_flags_tables_list_exactly_the_flags_of_help():
    tables = flag_tables()
    covered = set()
    for heading, rows in tables.items():
        scripts = scripts_of(heading)
        covered.update(scripts)
        flags = {script: help_flags(script) for script in scripts}
        every = set().union(*flags.values())
        assert not every - set(rows), f"flags of --help missing from docs/flags.md '## {heading}': " \
                                      f"{sorted(every - set(rows))}"
        assert not set(rows) - every, f"docs/flags.md '## {heading}' lists flags no script there has: " \
                                      f"{sorted(set(rows) - every)}"
        for flag, row in rows.items():  # a flag only some of the scripts have says which
            have = [s for s in scripts if flag in flags[s]]
            lack = [s for s in scripts if flag not in flags[s]]
            if lack:
                named_have = "only" in row and all(f"`{s}`" in row for s in have)
                named_lack = " but " in row and all(f"`{s}`" in row for s in lack)
                assert named_have or named_lack, f"docs/flags.md: the {flag} row must say which scripts " \
                                                 f"have it ({', '.join(have)})"
    scripts = sorted(rel(p) for p in glob.glob(os.path.join(ROOT, "*.py")) if has_cli(p))
    assert not set(scripts) - covered, f"scripts with a command line but no table in docs/flags.md: " \
                                       f"{sorted(set(scripts) - covered)}"


def has_cli(path: str) -> bool:
    text = read(path)
    return "argparse" in text and '__name__ == "__main__"' in text


# ---------------------------------------------------------------------------
# Commands

def documented_commands() -> list:
    """[(page, command key, tokens)]: every command in a ```bash block, one per line (continued
    lines joined, comments dropped, split at && ; | &), and every inline `python ...` or
    `torchrun ...`. The key is the command without its python and environment prefix."""
    found = []
    for path in DOCS:
        text = read(path)
        lines = []
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            lines += block.replace("\\\n", " ").splitlines()
        prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
        lines += re.findall(r"`((?:\.venv/bin/)?python [^`]+|torchrun [^`]+)`", prose)
        for line in lines:
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*|\s+&(?:\s+|$)", line):
                tokens = shlex.split(part)
                while tokens and (re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]) or tokens[0] == "time"):
                    tokens = tokens[1:]
                if not tokens:
                    continue
                if tokens[0] in ("python", "python3", ".venv/bin/python"):
                    tokens = tokens[1:]
                elif tokens[0] not in ("torchrun", "./setup.sh"):
                    continue  # cp, mkdir: not commands of this repository
                found.append((rel(path), join(tokens), tokens))
    return found


def join(tokens: list) -> str:
    return " ".join(f'"{t}"' if " " in t else t for t in tokens)


def script_and_args(tokens: list) -> tuple:
    """(script, its arguments) of a command, or (None, None) for python -m and ./setup.sh."""
    if tokens[0] == "./setup.sh" or tokens[0] == "-m":
        return None, None
    i = next(i for i, t in enumerate(tokens) if t.endswith(".py"))
    return tokens[i], tokens[i + 1:]


def test_the_documentation_shows_commands():
    keys = {key for _, key, _ in documented_commands()}
    assert "main_activation.py --dataset fashion-mnist --quick" in keys and "report.py" in keys


def test_every_documented_command_is_run():
    documented = {}
    for page, key, _ in documented_commands():
        documented.setdefault(key, page)
    missing = {key: page for key, page in documented.items() if key not in RUN_BY}
    assert not missing, "commands shown in the documentation that no test or .ci/run is named to run " \
                        f"(add them to RUN_BY in tests/test_docs.py): {missing}"
    stale = set(RUN_BY) - set(documented)
    assert not stale, f"RUN_BY lists commands the documentation no longer shows: {sorted(stale)}"


@pytest.mark.parametrize("key", sorted(RUN_BY))
def test_each_command_is_run_where_it_says(key):
    """Each place named runs such a command: the test exists, and its file (with the helpers
    of tests/conftest.py) or .ci/run passes every flag the command uses."""
    ci = read(os.path.join(ROOT, ".ci", "run"))
    texts = [read(os.path.join(ROOT, "tests", "conftest.py"))] if any("::" in w for w in RUN_BY[key]) else []
    for where in RUN_BY[key]:
        if where == ".ci/run":
            needle = "-m pytest -q tests" if key.startswith("-m pytest") else key
            assert needle in ci, f".ci/run does not run {needle!r}"
            texts.append(ci)
            continue
        file, name = where.split("::")
        source = read(os.path.join(ROOT, file))
        tree = ast.parse(source)
        node = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None)
        assert node is not None, f"{file} has no function {name}"
        # this file holds RUN_BY itself: only the named function's own code counts
        texts.append(ast.get_source_segment(source, node) if file == "tests/test_docs.py" else source)
    tokens = shlex.split(key)
    script, args = script_and_args(tokens)
    for flag in [t.split("=")[0] for t in (args or []) if t.startswith("--")]:
        assert any(flag in text for text in texts), f"{key}: no place named in RUN_BY passes {flag}"


class Parsed(BaseException):
    """Raised once argparse has parsed a command line: nothing runs after it."""


def concrete(args: list, tmp_path) -> list:
    """Placeholders made real: ${VAR} -> 1, <...> -> a temporary folder, --out -> a temporary folder."""
    out = []
    for i, arg in enumerate(args):
        arg = re.sub(r"\$\{?\w+\}?", "1", arg)
        if "<" in arg or (i and args[i - 1] in ("--out", "--json")):
            arg = str(tmp_path / "placeholder")
        out.append(arg)
    return out


@pytest.mark.parametrize("key", sorted({key for _, key, _ in documented_commands()}))
def test_every_documented_command_is_valid(key, tmp_path, monkeypatch):
    """The script exists and takes the command's flags and values: a main_*.py command goes
    through everything before training (flags, --values, --tune-lr, --from-results), any
    other is parsed by the script's own parser."""
    tokens = shlex.split(key)
    script, args = script_and_args(tokens)
    if script is None:
        assert tokens[0] != "./setup.sh" or os.path.exists(os.path.join(ROOT, "setup.sh"))
        return
    assert os.path.exists(os.path.join(ROOT, script)), f"{key}: {script} does not exist"
    args = concrete(args, tmp_path)
    if script == "tests/mutants.py":  # mutant names and --before, or the mechanical mode's flags
        import sys
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        mutants = importlib.import_module("mutants")
        if any(a.startswith("-") and a != "--before" for a in args):
            mutants.mechanical_parser().parse_args(args)
        else:
            assert all(a == "--before" or a in mutants.MUTANTS for a in args), key
        return
    if script in TRAINING and "--evaluate" not in args:
        import sweep
        monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: 0)
        if "--out" not in args:
            args += ["--out", str(tmp_path / "out")]
        code, _, err = run_main(script, args)
        assert code == 0, f"{key}: {err}"
        return
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **k):
        real(self, *a, **k)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed):
        code, _, err = run_main(script, args)
        pytest.fail(f"{key}: exited {code} before its arguments were parsed: {err}")


def test_the_consolidated_model_tunes_the_rate_of_the_combination(mnist_dir, tmp_path, monkeypatch):
    """python main_consolidated.py --from-results --tune-lr x0.3 x1 x3, training stubbed: the
    combination of the ablations' winners is trained at each multiple of its own rate, and its
    rate chosen on validation."""
    import torch
    import train
    from conftest import as_group, load_results, run_script, tiny_argv
    from test_report import write_study
    out = tmp_path / "study"
    write_study(out)  # learning_rate's best is 3e-4
    seen = []

    def train_run(config, split, num_classes, resume_path=None, desc="run"):
        seen.append(config["lr"])
        val = {9e-5: 0.5, 3e-4: 0.6, 9e-4: 0.7}.get(config["lr"], 0.4)
        return {"status": "completed", "history": {"loss": [1.0], "train_acc": [val], "val_acc": [val]},
                "test_acc": val, "best_val_acc": val, "epochs_completed": 1, "train_seconds": 0.01,
                "best_epoch": 1, "test_acc_at_best": val, "model": {"w": torch.zeros(1)}}

    monkeypatch.setattr(train, "train_group", as_group(train_run))
    code, _, err = run_script("main_consolidated", ["--from-results", "--tune-lr", "x0.3", "x1", "x3",
                                                    "--values", "consolidated", *tiny_argv(mnist_dir, out)])
    assert code == 0, err
    assert sorted(seen) == [9e-5, 3e-4, 9e-4]
    results = load_results(out, "consolidated")
    assert sorted(r["name"] for r in results["runs"]) == \
        ["consolidated", "consolidated_at_lr0.0009", "consolidated_at_lr9e-05"]
    tuning = results["tuning"]["consolidated"]
    assert tuning["own_lr"] == 3e-4 and tuning["chosen_lr"] == 9e-4 and tuning["at_edge"] is True


@pytest.mark.slow
def test_the_mutation_check_runs():
    """tests/mutants.py on one mutant: a copy of the repository with the bug, and the test that
    must catch it (the quick preset against its row in docs/flags.md)."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, os.path.join("tests", "mutants.py"), "quick-preset"], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "quick-preset" in proc.stdout and "caught" in proc.stdout and "score: 1 of 1" in proc.stdout


# ---------------------------------------------------------------------------
# Links and file names

def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: str) -> set:
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", [rel(p) for p in DOCS])
def test_every_relative_link_and_anchor_exists(page):
    path = os.path.join(ROOT, page)
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        assert os.path.exists(linked), f"{page}: link {target} points at nothing"
        if anchor:
            assert anchor in anchors(linked), f"{page}: link {target}: no such heading in {rel(linked)}"


# names a page may mention that are not files of the repository: what the scripts write, user files
OUTPUT = re.compile(r"^(?:(?:models|results|images|data|/tmp|/shared|/usr)/|(?:%s)_[\w.-]*\.(?:png|json|pt)$"
                    r"|REPORT\.md$)" % "|".join(EXPERIMENTS))
USER_FILES = {"shoe.png"}


@pytest.mark.parametrize("page", [rel(p) for p in DOCS])
def test_every_file_name_mentioned_exists(page):
    path = os.path.join(ROOT, page)
    text = read(path)
    spans = re.findall(r"`([^`\s]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for span in spans:
        if not re.match(r"^[\w./*-]+\.(?:py|sh|md|txt|ini|png|json|pt)$|^\.ci/run$", span):
            continue
        if OUTPUT.match(span) or span in USER_FILES or "<" in span or re.match(r"^[._][\w.]+$", span):  # .best.pt, _loss.png
            continue
        places = [os.path.join(ROOT, span), os.path.join(os.path.dirname(path), span)]
        assert any(glob.glob(p) for p in places), f"{page} mentions `{span}`, which does not exist"


def test_the_readme_is_short_and_maps_every_page():
    assert os.path.getsize(README) < 10_000
    text = read(README)
    for page in PAGES:
        assert f"(docs/{os.path.basename(page)})" in text, f"README.md does not link {rel(page)}"
