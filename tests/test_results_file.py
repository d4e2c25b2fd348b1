"""A results file the script cannot read stops it with one sentence, before training,
and is left as it was."""
import pytest

from conftest import run_script, tiny_argv


@pytest.mark.parametrize("text", ['{"runs": 3}', "[1, 2]", '{"runs": [{"name": "relu"}]}', '{"runs": [', ""])
def test_unreadable_results_file_is_refused(mnist_dir, tmp_path, text):
    results = tmp_path / "results"
    results.mkdir()
    (results / "activation.json").write_text(text)
    code, _, err = run_script("main_activation", tiny_argv(mnist_dir, tmp_path, extra=["--values", "relu"]))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is not a results file" in lines[0] and "Traceback" not in err
    assert (results / "activation.json").read_text() == text
    assert not (tmp_path / "models").exists()


def test_empty_list_of_runs_is_fine(mnist_dir, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "activation.json").write_text('{"experiment": "activation", "runs": []}')
    code, out, _ = run_script("main_activation", tiny_argv(mnist_dir, tmp_path, extra=["--values", "relu"]))
    assert code == 0 and "completed" in out


def test_plotting_refuses_an_unreadable_results_file(tmp_path, capsys):
    import plotting
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "activation.json").write_text('{"runs": [')
    assert plotting.main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is not a results file" in err
    assert not (tmp_path / "images").exists()
