"""tests/mutants.py's mechanical mode on a small made-up file: every kind of mutant is found,
each makes exactly its change and compiles, the draw depends on the seed only, and a mutant's
id survives lines added above it. No training: a fraction of a second."""
import ast
import textwrap

import pytest

import mutants

SNIPPET = textwrap.dedent('''\
    LIMIT = 3  # at import


    def f(xs: list, n: int | None = None) -> int | None:
        """a docstring"""
        if len(xs) < n and not xs[0] == 2:  # a comment with and, or, < in it
            print(f"{n + 1}")
            xs.append(n * 2)
        total = 0
        for x in xs[1:n]:
            total += x % 5
        if n in xs or xs is None:
            return total - 1
        return None
    ''')


def mutants_of(tmp_path, text=SNIPPET, name="snippet.py"):
    (tmp_path / name).write_text(text)
    return mutants.candidates(str(tmp_path))


def test_every_kind_is_found_and_each_mutant_is_exactly_its_change(tmp_path):
    found = mutants_of(tmp_path)
    drawn = mutants.draw(found, len(found), 0, str(tmp_path))
    assert len(drawn) == len(found)  # every one checked against the tree changed directly, and compiles
    changes = {(m["kind"], m["original"].strip(), m["mutated"].strip()) for m in drawn}
    line6 = "if len(xs) < n and not xs[0] == 2:  # a comment with and, or, < in it"
    assert ("compare", line6, "if len(xs) <= n and not xs[0] == 2:  # a comment with and, or, < in it") in changes
    assert ("compare", line6, "if len(xs) < n and not xs[0] != 2:  # a comment with and, or, < in it") in changes
    assert ("and-or", line6, "if (len(xs) < n or not xs[0] == 2):  # a comment with and, or, < in it") in changes
    assert ("not-dropped", line6, "if len(xs) < n and (xs[0] == 2):  # a comment with and, or, < in it") in changes
    assert ("int+1", line6, "if len(xs) < n and not xs[1] == 2:  # a comment with and, or, < in it") in changes
    assert ("arithmetic", "xs.append(n * 2)", "xs.append((n / 2))") in changes
    assert ("arithmetic", "total += x % 5", "total -= x % 5") in changes
    assert ("arithmetic", "total += x % 5", "total += (x // 5)") in changes
    assert ("call-dropped", "xs.append(n * 2)", "pass") in changes
    assert ("call-dropped", 'print(f"{n + 1}")', "pass") in changes
    assert ("return-none", "return total - 1", "return None") in changes
    assert ("slice+1", "for x in xs[1:n]:", "for x in xs[1:(n) + 1]:") in changes
    assert ("slice-1", "for x in xs[1:n]:", "for x in xs[1:(n) - 1]:") in changes
    assert ("compare", "if n in xs or xs is None:", "if n not in xs or xs is None:") in changes
    assert ("compare", "if n in xs or xs is None:", "if n in xs or xs is not None:") in changes
    assert ("int+1", "LIMIT = 3  # at import", "LIMIT = 4  # at import") in changes
    assert {m["kind"] for m in drawn} == set(mutants.KINDS)
    # not mutated: type hints (int | None), f-strings' insides, return None, docstrings
    assert not [m for m in drawn if m["line"] in (4, 5, 14)]
    assert not [m for m in drawn if m["line"] == 7 and m["kind"] != "call-dropped"]
    # a module's own lines run at import (the whole suite runs them); a function's at call time
    assert {m["call_time"] for m in drawn if m["line"] == 1} == {False}
    assert {m["call_time"] for m in drawn if m["line"] > 4} == {True}
    for m in drawn:
        text = mutants._apply(SNIPPET, m["edits"])
        compile(text, "snippet.py", "exec")
        assert ast.dump(ast.parse(text)) != ast.dump(ast.parse(SNIPPET))


def test_the_edits_keep_what_the_operators_bind(tmp_path):
    text = "def g(a, b, c):\n    return (a or b and c, a | b & c, a ** b * c, -a ** 2, a - -b)\n"
    found = mutants_of(tmp_path, text)
    drawn = mutants.draw(found, len(found), 0, str(tmp_path))
    assert len(drawn) == len(found) and len(found) > 8  # each one's text parses to exactly its change


def test_the_draw_depends_on_the_seed_only(tmp_path):
    found = mutants_of(tmp_path)
    ids = lambda seed: [m["id"] for m in mutants.draw(mutants_of(tmp_path), 6, seed, str(tmp_path))]
    assert ids(1234) == ids(1234) and len(set(ids(1234))) == 6
    assert ids(1234) != ids(4321)
    assert sorted(m["id"] for m in found) == sorted(m["id"] for m in mutants_of(tmp_path))


def test_a_mutants_id_survives_lines_added_above_it(tmp_path):
    before = {m["id"]: m["line"] for m in mutants_of(tmp_path)}
    after = {m["id"]: m["line"] for m in mutants_of(tmp_path, "import os\n\n" + SNIPPET)}
    assert set(before) <= set(after)
    assert all(after[i] == line + 2 for i, line in before.items())


def test_only_the_changed_lines(tmp_path):
    diff = textwrap.dedent('''\
        diff --git a/snippet.py b/snippet.py
        --- a/snippet.py
        +++ b/snippet.py
        @@ -6 +6 @@ def f(xs: list, n: int | None = None) -> int | None:
        -        if len(xs) <= n:
        +        if len(xs) < n and not xs[0] == 2:  # a comment with and, or, < in it
        @@ -12,0 +12,2 @@
        +        if n in xs or xs is None:
        +            return total - 1
        @@ -20,3 +21,0 @@
        ''')
    lines = mutants.lines_of_diff(diff)
    assert lines == {"snippet.py": {6, 12, 13}}
    (tmp_path / "snippet.py").write_text(SNIPPET)
    found = mutants.candidates(str(tmp_path), lines)
    assert found and {m["line"] for m in found} == {6, 12, 13}


def test_the_command_draws_a_sample_and_runs_nothing_with_list():
    """tests/mutants.py --all --sample 3 --list: the candidates, the seed and the sample (the same
    for the same seed: above); --since HEAD --sample 60 --list, the lines changed since HEAD."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        pytest.skip("a copy of the repository without git (the mutation check's own coverage run)")

    def listing(*args):
        proc = subprocess.run([sys.executable, os.path.join("tests", "mutants.py"), *args], cwd=root,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout[proc.stdout.index("candidate mutants"):]

    first = listing("--all", "--sample", "3", "--list")
    assert "seed " in first and "; 3 drawn" in first and first.count("\n[") == 3
    assert "candidate mutants on" in listing("--since", "HEAD", "--sample", "60", "--list")


def test_a_file_system_left_mounted_by_a_killed_test_is_unmounted(tmp_path):
    """A mutant's tests killed at the timeout inside a full-disk test leave its small tmpfs
    mounted in the mutant's folder, which could then not be removed: unmount_under unmounts
    every mount under the folder, nested ones first, and nothing outside it."""
    from test_nothing_lost import tmpfs
    outside = tmp_path / "outside"
    with tmpfs(tmp_path / "mutant" / "a" / "small", size="1m") as small, tmpfs(outside, size="1m"):
        with tmpfs(small / "nested", size="1m"):
            (small / "nested" / "f").write_text("x")
            mutants.unmount_under(str(tmp_path / "mutant"))
            mounted = {line.split()[1] for line in open("/proc/mounts")}
            assert str(small) not in mounted and str(small / "nested") not in mounted
            assert str(outside) in mounted
