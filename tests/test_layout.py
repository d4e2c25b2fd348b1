"""The house's layout (issue 30): the brief's files and the commands on top, the machinery in
core/, which never imports a top-level file; every function short; an ablation named only in
its own script. Read from the source with ast: nothing is imported or run."""
import ast
import glob
import os

import pytest

from conftest import ROOT

TOP = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.py")))
CORE = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "core", "*.py")))
# gpu_check.py runs main_learning_rate.py as a user would, to measure the GPU paths it needs
RUNS_A_NAMED_SCRIPT = {"gpu_check.py"}


def tree(path):
    return ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read(), path)


def imported(path) -> set:
    """Every module path imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", CORE)
def test_the_package_never_imports_a_top_level_file(path):
    top_level = {name[:-3] for name in TOP}
    assert not imported(path) & top_level, f"{path} imports {sorted(imported(path) & top_level)}"


@pytest.mark.parametrize("path", TOP + CORE)
def test_no_function_is_over_50_lines(path):
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree(path))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 50]
    assert not long, f"{path}: {long}"


def ablation_names() -> dict:
    """{name: script} of each main_*.py's declaration, read from its ABLATION = Ablation(name=...)."""
    found = {}
    for script in (s for s in TOP if s.startswith("main_")):
        for node in ast.walk(tree(script)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Ablation":
                name = next(k.value.value for k in node.keywords if k.arg == "name")
                found[name if isinstance(name, str) else script[5:-3]] = script
    return found


def test_every_script_declares_its_ablation():
    assert set(ablation_names().values()) == {s for s in TOP if s.startswith("main_")}


def test_an_ablation_is_named_only_in_its_own_script():
    """No code outside its script names an ablation (config keys that are also ablation names,
    such as dropout, are keys there, not ablations: only the other names are looked for)."""
    config_keys = {"optimizer", "activation", "dropout", "lr"}
    # the consolidated model is the study's end, not an ablation: the report compares it with the
    # baseline and reads its class-by-class evaluation by name
    names = {n: s for n, s in ablation_names().items() if n not in config_keys | {"consolidated"}}
    assert "learning_rate" in names and "weight_regularization" in names
    for path in TOP + CORE:
        if path in RUNS_A_NAMED_SCRIPT:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                assert names[node.value] == path, f"{path}:{node.lineno} names the ablation {node.value!r}"
