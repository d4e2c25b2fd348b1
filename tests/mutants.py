"""Re-check that the suite catches the bugs it was written against: each mutant below is
a one-line bug a user would suffer; it is applied to a copy of the repository and the
tests named beside it must then fail (the test command shows they pass without it).

    .venv/bin/python tests/mutants.py            # every mutant, about 1.5 minutes on 2 cores
    .venv/bin/python tests/mutants.py eval-mode  # one

Not part of the test command or CI: a mutation check runs the tests many times.
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (file, the right line(s), the bug, the tests that must fail)
MUTANTS = {
    "eval-mode": ("train.py", "    model.eval()\n    k = _unwrapped(model).k", "    k = _unwrapped(model).k",
                  "tests/test_user_promises.py::test_accuracy_is_measured_in_eval_mode_with_dropout_off"),
    "inf-is-finite": ("train.py", "if not math.isfinite(loss / images)}", "if math.isnan(loss / images)}",
                      "tests/test_user_promises.py::test_a_loss_that_is_not_finite_stops_the_run_as_diverged"),
    "best-is-last": ("train.py", '"best_val_acc": max(self.history["val_acc"], default=None),',
                     '"best_val_acc": (self.history["val_acc"] or [None])[-1],',
                     "tests/test_user_promises.py::test_best_val_acc_is_the_best_epoch"),
    "dropout-on-logits": ("alexnet.py", "        return self.fc3(self.drop(x))",
                          "        return self.drop(self.fc3(self.drop(x)))",
                          "tests/test_user_promises.py::test_dropout_never_touches_the_logits"),
    "quick-preset": ("sweep.py", "test_size=1000, epochs=5)", "test_size=1000, epochs=3)",
                     "tests/test_user_promises.py::test_the_quick_preset_is_the_documented_one"),
    "write-in-place": ("storage.py", "    tmp = temporary_name(path)\n", "    tmp = path\n",
                       "tests/test_user_promises.py::"
                       "test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary"),
    "failed-run-loses-resume": ("sweep.py", "    if state_dict is not None and os.path.exists(resume):",
                                "    if os.path.exists(resume):",
                                "tests/test_user_promises.py::test_a_run_failing_after_a_checkpoint_resumes_on_rerun"),
    "one-dropout-generator": ("fused.py", "for p, g, part in zip(self.dropouts, self.generators, x):",
                              "for p, g, part in zip(self.dropouts, [self.generators[0]] * self.k, x):",
                              "tests/test_fusion.py::test_each_fused_run_is_the_run_trained_alone"),
    "one-learning-rate": ("train.py", 'make_optimizer(c["optimizer"], p, c["lr"])',
                          'make_optimizer(c["optimizer"], p, configs[0]["lr"])',
                          "tests/test_fusion.py::test_each_fused_run_is_the_run_trained_alone"),
    "one-activation": ("fused.py", "self.same_activation = len(set(activations)) == 1", "self.same_activation = True",
                       "tests/test_fusion.py::test_each_fused_run_is_the_run_trained_alone"),
    "shared-penalty": ("fused.py", "                total = total + l1 * rows.abs().sum(1)",
                       "                total = total + l1[0] * rows.abs().sum(1)",
                       "tests/test_train.py::test_weight_penalty_is_each_runs_own_l1_l2_and_elastic_net_with_biases"),
}


def copy_of_repository(dest: str) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))


def caught(name: str) -> bool:
    file, right, bug, tests = MUTANTS[name]
    with tempfile.TemporaryDirectory() as dest:
        copy_of_repository(dest)
        path = os.path.join(dest, file)
        text = open(path).read()
        if right not in text:
            raise SystemExit(f"{name}: {file} no longer contains the line it mutates; update tests/mutants.py")
        with open(path, "w") as f:
            f.write(text.replace(right, bug, 1))
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests],
                             cwd=dest, capture_output=True, text=True)
    return run.returncode != 0


def main(names) -> int:
    missed = []
    for name in names or MUTANTS:
        ok = caught(name)
        print(f"{name:26s} {'caught' if ok else 'MISSED'} by {MUTANTS[name][3]}", flush=True)
        if not ok:
            missed.append(name)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
