"""tests/compare_outputs.py's comparison, on two output folders written here: equal outputs
pass whatever their timings and run ids, and a changed field, a changed tensor element, a file
on one side only or a damaged file each fail with the file and key named."""
import json

import pytest
import torch

import compare_outputs


def write_outputs(out, lr=1e-4, weight=0.5, run_id="a1", seconds=1.0):
    """A run record, a results file, a CSV and a checkpoint (with an optimizer state), as a sweep writes them."""
    record = {"name": "lr", "config": {"lr": lr, "checkpoint_seconds": 0.0}, "history": {"loss": [2.3, 2.2]},
              "timing": {"train_seconds": [seconds]}, "train_seconds": seconds, "run_id": run_id,
              "trained_on": {"host": f"host-{run_id}", "pid": len(run_id), "device": "cpu"},
              "kernels": {"how": "--kernels auto", "seconds": {"conv1": seconds}}}
    (out / "results" / "lr").mkdir(parents=True)
    (out / "results" / "lr" / "lr_seed0.json").write_text(json.dumps(record))
    (out / "results" / "lr.json").write_text(json.dumps({"runs": [record], "best": {"setting": "lr"}}))
    (out / "results" / "lr.csv").write_text(f"name,lr,test_acc\nlr,{lr},0.5\n")
    (out / "models" / "lr").mkdir(parents=True)
    weights = torch.full((3, 4), weight)
    torch.save({"model": {"w": weights}, "optimizer": {"state": {0: {"exp_avg": weights * 2}}}, "run_id": run_id},
               out / "models" / "lr" / "lr.pt")
    (out / "images").mkdir()
    (out / "images" / "lr.png").write_bytes(run_id.encode())  # an image counts by its presence only


def compare(tmp_path, capsys, **changes):
    write_outputs(tmp_path / "before")
    write_outputs(tmp_path / "after", **changes)
    problems = compare_outputs.compare_files(tmp_path / "before", tmp_path / "after", "tiny")
    return problems, capsys.readouterr().out


def test_equal_outputs_pass_whatever_their_timings_run_ids_and_hosts(tmp_path, capsys):
    assert compare(tmp_path, capsys, run_id="b2", seconds=7.5) == (0, "")


def test_a_changed_field_is_named_with_its_file_and_key_and_both_values(tmp_path, capsys):
    problems, out = compare(tmp_path, capsys, lr=2e-4)
    assert problems == 3  # the record, the results file and the CSV; not the checkpoint
    assert "DIFF tiny/results/lr/lr_seed0.json: 1 of" in out and "/config/lr: before 0.0001  after 0.0002" in out
    assert "DIFF tiny/results/lr.json" in out and "/runs/0/config/lr" in out
    assert "DIFF tiny/results/lr.csv" in out and "/0/lr: before '0.0001'  after '0.0002'" in out


def test_one_element_of_a_tensor_is_found_in_the_model_and_the_optimizer_state(tmp_path, capsys):
    write_outputs(tmp_path / "before")
    write_outputs(tmp_path / "after")
    path = tmp_path / "after" / "models" / "lr" / "lr.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["w"][1, 2] = 0.5 + 1e-7
    checkpoint["optimizer"]["state"][0]["exp_avg"] = checkpoint["optimizer"]["state"][0]["exp_avg"].double()
    torch.save(checkpoint, path)
    assert compare_outputs.compare_files(tmp_path / "before", tmp_path / "after", "tiny") == 1
    out = capsys.readouterr().out
    assert "DIFF tiny/models/lr/lr.pt: 2 of 2 values differ" in out
    assert "/model/w: before torch.float32 (3, 4) tensor  after 1 of 12 elements differ" in out
    assert "/optimizer/state/0/exp_avg: before torch.float32 (3, 4) tensor  after torch.float64 (3, 4) tensor" in out


def test_a_file_on_one_side_only_and_a_damaged_file_fail(tmp_path, capsys):
    write_outputs(tmp_path / "before")
    write_outputs(tmp_path / "after")
    (tmp_path / "after" / "images" / "lr.png").rename(tmp_path / "after" / "images" / "lr_test_acc.png")
    (tmp_path / "after" / "results" / "lr.json").write_text("{")
    assert compare_outputs.compare_files(tmp_path / "before", tmp_path / "after", "tiny") == 3
    out = capsys.readouterr().out
    assert "DIFF tiny/images/lr.png: only before wrote it" in out
    assert "DIFF tiny/images/lr_test_acc.png: only after wrote it" in out
    assert "DIFF tiny/results/lr.json: 1 of 1 values differ" in out and "JSONDecodeError" in out


def test_a_whole_run_that_differs_is_said_in_a_few_lines(tmp_path, capsys):
    problems, out = compare(tmp_path, capsys, lr=2e-4, weight=0.25)
    assert problems == 4
    assert "DIFF tiny: all 4 files differ (the whole run differs); the first of them:" in out
    assert len(out.splitlines()) <= 2 + compare_outputs.SHOWN + 1


def test_a_revision_that_is_no_commit_is_refused_in_one_sentence():
    """tests/compare_outputs.py REV: REV must name a commit of this repository."""
    with pytest.raises(SystemExit) as exc:
        compare_outputs.main(["no-such-revision"])
    assert str(exc.value.code).startswith("compare_outputs: 'no-such-revision' is not a commit of ")


def test_a_field_declared_new_is_allowed_only_where_the_after_side_alone_has_it(tmp_path):
    """--new trained_on/threads: a field added on purpose is no difference where only the after
    side has it; where both have it, or only the before side, or it is not declared, it is one."""
    before = {"runs": [{"trained_on": {"device": "cpu"}, "lr": 1}]}
    after = {"runs": [{"trained_on": {"device": "cpu", "threads": 2}, "lr": 1}]}
    new = ("trained_on/threads",)
    found = []
    compare_outputs.differences(before, after, "", found, new)
    assert found == []
    compare_outputs.differences(before, after, "", found)  # not declared
    assert found == [("/runs/0/trained_on/threads", "'<missing>'", "2")]
    found = []
    compare_outputs.differences(after, before, "", found, new)  # only before has it: a field lost
    assert found == [("/runs/0/trained_on/threads", "2", "'<missing>'")]
    found = []
    changed = {"runs": [{"trained_on": {"device": "cpu", "threads": 1}, "lr": 1}]}
    compare_outputs.differences(changed, after, "", found, new)  # both have it: compared
    assert found == [("/runs/0/trained_on/threads", "1", "2")]
    found = []
    compare_outputs.differences({"threads": 1}, {"threads": 1, "x": {"threads": 2}}, "", found, new)
    assert found == [("/x", "'<missing>'", "{'threads': 2}")]  # only a key under trained_on/ is declared


@pytest.mark.parametrize("new, code", [([], 1), (["--new", "trained_on/threads"], 0)])
def test_the_command_line_s_new_fields_reach_the_comparison(tmp_path, monkeypatch, capsys, new, code):
    """tests/compare_outputs.py 922a8e1 --new trained_on/threads: the two revisions' commands
    (stood in for here: the after side's records name their threads, the before side's do not)
    differ by that field alone, so the command passes with --new and fails without it."""
    def run_all(src, folder, label):
        out = folder / "tiny"
        write_outputs(out)
        if label.startswith("after"):
            for path in (out / "results" / "lr" / "lr_seed0.json", out / "results" / "lr.json"):
                data = json.loads(path.read_text())
                for record in data.get("runs", [data]):
                    record["trained_on"]["threads"] = 2
                path.write_text(json.dumps(data))
        return {"tiny": (out, 0, "")}
    monkeypatch.setattr(compare_outputs, "COMMANDS", {"tiny": ["main_learning_rate.py"]})
    monkeypatch.setattr(compare_outputs, "export", lambda rev, folder: folder)
    monkeypatch.setattr(compare_outputs, "run_all", run_all)
    assert compare_outputs.main(["922a8e1", *new]) == code
    out = capsys.readouterr().out
    assert ("trained_on/threads" in out) == (code == 1)
