"""A mutation check: each mutant below is a plausible one-line bug that would change
results or lose work without a sound. It is applied to a copy of the repository and
the tests named beside it must then fail (the test command shows they pass without it).

    .venv/bin/python tests/mutants.py              # every mutant: the score, then each missed one
    .venv/bin/python tests/mutants.py eval-mode    # the named ones
    .venv/bin/python tests/mutants.py --before     # against the tests that existed before issue 20's
                                                   # (issue 16's mutants, of code that is new, left out)

Each mutant names the tests written to catch it; --before runs it against BEFORE's tests
instead (the tests of the suite at 3d6a508 that were meant to cover that code), which is
how the score before issue 20 was measured. Mutants that cannot be told apart from the
right code by any test are listed in EQUIVALENT with the reason, and are not run.

Not part of the test command or CI: a mutation check runs the tests many times
(about 6 minutes for all on 2 cores).
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UP = "tests/test_user_promises.py::"
FU = "tests/test_fusion.py::"
PI = "tests/test_pinned.py::"
TR = "tests/test_train.py::"
GP = "tests/test_gpu_paths.py::"
DI = "tests/test_disk.py::"
OA = "tests/test_outputs_agree.py::"
TL = "tests/test_tune_lr.py::"

# name: (file, the right line(s), the bug, the tests that must fail)
MUTANTS = {
    # -- issue 13's, kept -------------------------------------------------------------------
    "eval-mode": ("train.py", "    model.eval()\n    k = _unwrapped(model).k", "    k = _unwrapped(model).k",
                  UP + "test_accuracy_is_measured_in_eval_mode_with_dropout_off"),
    "inf-is-finite": ("train.py", "if not math.isfinite(loss / images)}", "if math.isnan(loss / images)}",
                      UP + "test_a_loss_that_is_not_finite_stops_the_run_as_diverged"),
    "best-is-last": ("train.py", '"best_val_acc": max(self.history["val_acc"], default=None),',
                     '"best_val_acc": (self.history["val_acc"] or [None])[-1],',
                     UP + "test_best_val_acc_is_the_best_epoch"),
    "dropout-on-logits": ("alexnet.py", "        return self.fc3(self.drop(x))",
                          "        return self.drop(self.fc3(self.drop(x)))",
                          UP + "test_dropout_never_touches_the_logits"),
    "quick-preset": ("sweep.py", "test_size=1000, epochs=5)", "test_size=1000, epochs=3)",
                     UP + "test_the_quick_preset_is_the_documented_one"),
    "write-in-place": ("storage.py", "    tmp = temporary_name(path)\n", "    tmp = path\n",
                       UP + "test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary"),
    "failed-run-loses-resume": ("sweep.py", "    if state_dict is not None and os.path.exists(resume):",
                                "    if os.path.exists(resume):",
                                UP + "test_a_run_failing_after_a_checkpoint_resumes_on_rerun"),
    "one-dropout-generator": ("fused.py", "generator=self.generators[k]", "generator=self.generators[0]",
                              FU + "test_each_fused_run_is_the_run_trained_alone"),
    "one-learning-rate": ("train.py", 'make_optimizer(c["optimizer"], p, c["lr"])',
                          'make_optimizer(c["optimizer"], p, configs[0]["lr"])',
                          FU + "test_each_fused_run_is_the_run_trained_alone"),
    "group-drops-resume-states": ("train.py", "            if state is None:\n",
                                  "            if state is None or len(configs) > 1:\n",
                                  FU + "test_a_fused_run_resumes_alone_and_a_run_alone_resumes_fused"),
    "one-activation": ("fused.py", "self.same_activation = len(set(activations)) == 1", "self.same_activation = True",
                       FU + "test_each_fused_run_is_the_run_trained_alone"),
    "shared-penalty": ("fused.py", "                total = total + l1 * rows.abs().sum(1)",
                       "                total = total + l1[0] * rows.abs().sum(1)",
                       TR + "test_weight_penalty_is_each_runs_own_l1_l2_and_elastic_net_with_biases"),
    # -- fused.py ---------------------------------------------------------------------------
    "dropout-scale-p": ("fused.py", ".div_(1 - p)\n", ".div_(p)\n", PI + "test_fused_dropout_scales_as_nn_dropout"),
    "dropout-in-eval": ("fused.py", "if not self.training or p == 0:", "if p == 0:",
                        PI + "test_fused_dropout_scales_as_nn_dropout"),
    "fc-views-of-member-0": ("fused.py", "else t[k]", "else t[0]",
                             FU + "test_each_fused_run_is_the_run_trained_alone"),
    "l2-as-l1": ("fused.py", "                total = total + l2 * rows.pow(2).sum(1)",
                 "                total = total + l2 * rows.abs().sum(1)",
                 TR + "test_weight_penalty_is_each_runs_own_l1_l2_and_elastic_net_with_biases"),
    "inputs-swapped": ("fused.py", "torch.cat(parts, 1)", "torch.cat(parts[::-1], 1)",
                       FU + "test_each_fused_run_is_the_run_trained_alone"),
    # -- train.py ---------------------------------------------------------------------------
    "partial-batch-as-full": ("train.py", "loader.world_size / loader.global_batch_size(i)",
                              "loader.world_size / loader.batch_size",
                              PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    "ties-keep-last": ("train.py", 'val_acc > self.best["val_acc"]', 'val_acc >= self.best["val_acc"]',
                       PI + "test_ties_in_validation_accuracy_keep_the_first_epoch"),
    "resume-best-is-resume-epoch": ("train.py",
                                    '"model": state["model"] if best["model"] is None else best["model"]',
                                    '"model": state["model"]',
                                    PI + "test_after_a_resume_the_best_epoch_is_still_the_best_epoch"),
    "resume-file-drops-best": ("train.py",
                               '"model": None if self.best["epoch"] == self.epoch else self.best["model"]',
                               '"model": None',
                               PI + "test_after_a_resume_the_best_epoch_is_still_the_best_epoch"),
    "test-at-best-is-last": ("train.py",
                             'earlier = [j for j, m in enumerate(members) if m.best["epoch"] < m.epoch]',
                             "earlier = []",
                             PI + "test_test_acc_at_best_is_the_best_epochs_when_it_comes_before_the_last"),
    "loss-per-batch": ("train.py", 'm.history["loss"].append(totals[j][0] / images)',
                       'm.history["loss"].append(totals[j][0] / len(split.train))',
                       PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    "resume-without-optimizer": ("train.py", 'optimizer.load_state_dict(state["optimizer"])', "pass",
                                 TR + "test_in_process_resume_reproduces_the_uninterrupted_run"),
    "same-order-every-epoch": ("train.py", '[members[i].config["seed"] for i in active], epoch,',
                               '[members[i].config["seed"] for i in active], 0,',
                               PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    "checkpoint-every-inverted": ("train.py", '(epoch + 1) % config["checkpoint_every"] == 0',
                                  '(epoch + 1) % config["checkpoint_every"] != 0', TR + "test_checkpoint_every"),
    "train-acc-from-eval": ("train.py", "train_accs = ([correct / images for _, correct in totals]",
                            "train_accs = ([correct / len(split.train) for _, correct in totals]",
                            PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    # -- results.py -------------------------------------------------------------------------
    "failed-counts-as-finished": ("results.py", 'return bool(run) and run["status"] in ("completed", "diverged")',
                                  'return bool(run) and run["status"] in STATUSES',
                                  UP + "test_a_run_failing_after_a_checkpoint_resumes_on_rerun"),
    "nan-in-json": ("results.py", "if isinstance(value, float) and not math.isfinite(value):",
                    "if False:", PI + "test_results_files_are_standard_json_with_nan_and_infinity_as_null"),
    "records-lose-to-summary": ("results.py",
                                'by_key.update({(r["name"], r["seed"]): r for r in read_records(out, experiment)})',
                                'by_key = {**{(r["name"], r["seed"]): r for r in read_records(out, experiment)}, '
                                '**by_key}',
                                PI + "test_a_runs_own_record_wins_over_an_older_merged_results_file"),
    # -- storage.py -------------------------------------------------------------------------
    "no-fsync": ("storage.py", "os.fsync(f.fileno())", "pass",
                 PI + "test_a_file_is_on_disk_before_it_replaces_the_previous_one"),
    "signal-during-write-lost": ("storage.py", "_deferred.append(signum)", "None",
                                 "tests/test_nothing_lost.py::"
                                 "test_ctrl_c_inside_a_results_write_keeps_the_previous_file"),
    "lock-on-a-removed-file": ("storage.py", "if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:", "if True:",
                               PI + "test_a_lock_whose_file_was_removed_is_taken_on_the_new_file"),
    # -- sweep.py ---------------------------------------------------------------------------
    "claim-released-early": ("sweep.py", "claims.append(claim)", "claim.release()",
                             PI + "test_a_run_is_claimed_while_it_trains_and_released_after"),
    "record-under-wrong-job": ("sweep.py", "job = jobs[chosen[j]]", "job = jobs[j]",
                               PI + "test_each_record_is_its_own_runs_when_a_member_is_held_elsewhere"),
    "finished-meanwhile-retrained": ("sweep.py",
                                     'if finished(latest.get((job.name, job.config["seed"])), job.config):',
                                     "if False:",
                                     PI + "test_a_run_finished_meanwhile_by_another_process_is_not_retrained"),
    "shard-off-by-one": ("sweep.py", "jobs[shard[0] - 1::shard[1]]", "jobs[shard[0]::shard[1]]",
                         "tests/test_parallel_runs.py::test_shards_one_after_another_make_the_whole_sweep"),
    "most-loaded-rank": ("sweep.py", "min(range(world), key=lambda i: (loads[i], i))",
                         "max(range(world), key=lambda i: (loads[i], i))", UP + "test_work_is_balanced_over_ranks"),
    "best-checkpoint-with-last-test-acc": ("sweep.py",
                                           'best = {**record, "test_acc": record.get("test_acc_at_best")}',
                                           "best = dict(record)",
                                           PI + "test_test_acc_at_best_is_the_best_epochs_when_it_comes_before_the_last"),
    "groups-over-k": ("sweep.py", "n = -(-len(bucket) // k)", "n = max(1, len(bucket) // k)",
                      PI + "test_fused_groups_are_never_larger_than_k_and_even"),
    "rerun-retrains-finished": ("sweep.py", "        if finished(old, job.config):\n",
                                "        if False:\n", PI + "test_finished_runs_are_left_out_before_the_groups_are_made"),
    # -- checkpoints.py ---------------------------------------------------------------------
    "best-overwrites-last": ("checkpoints.py", 'f"{stem}.best.pt"', 'f"{stem}.pt"',
                             "tests/test_evaluate.py::test_the_best_validation_epoch_is_kept_beside_the_last"),
    "unsafe-load": ("checkpoints.py", 'weights_only=True, map_location="cpu", mmap=mmap',
                    'weights_only=False, map_location="cpu", mmap=mmap',
                    PI + "test_a_checkpoint_holding_code_is_refused"),
    "checkpoint-test-acc-is-val": ("checkpoints.py", '"test_acc": record["test_acc"], "best_val_acc"',
                                   '"test_acc": record["best_val_acc"], "best_val_acc"',
                                   PI + "test_test_acc_at_best_is_the_best_epochs_when_it_comes_before_the_last"),
    # -- evaluate.py ------------------------------------------------------------------------
    "confusion-transposed": ("evaluate.py", "index_put_((labels, predicted)", "index_put_((predicted, labels)",
                             PI + "test_confusion_rows_are_the_true_class_and_per_class_is_recall"),
    "per-class-precision": ("evaluate.py", "total = int(confusion[i].sum())", "total = int(confusion[:, i].sum())",
                            PI + "test_confusion_rows_are_the_true_class_and_per_class_is_recall"),
    # -- data.py ----------------------------------------------------------------------------
    "seed-plus-epoch": ("data.py", "manual_seed(seed * 1_000_003 + epoch)", "manual_seed(seed + epoch)",
                        PI + "test_no_seed_and_epoch_repeat_another_seeds_epoch"),
    "val-leaks-into-train": ("data.py", "val_idx, train_idx = pool[:n_val], pool[n_val:]",
                             "val_idx, train_idx = pool[:n_val], pool[n_val - 1:]",
                             "tests/test_data_loading.py::test_splits_are_disjoint_in_range_and_reproducible"),
    "last-batch-full-size": ("data.py", "min(self.batch_size, len(self.indices) - step * self.batch_size)",
                             "self.batch_size", PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    "flip-upside-down": ("data.py", "x.flip(3)", "x.flip(2)",
                         "tests/test_transforms.py::test_flip_mask_mirrors_exactly_the_masked_images"),
    # -- stats.py ---------------------------------------------------------------------------
    "best-on-test": ("stats.py", 'key=lambda r: r["best_val_acc_mean"])', 'key=lambda r: r["test_acc_mean"])',
                     PI + "test_the_best_setting_is_chosen_on_validation_never_on_test"),
    "population-std": ("stats.py", "std = float(x.std(ddof=1))", "std = float(x.std())",
                       "tests/test_stats.py::test_describe_from_first_principles"),
    "diverged-runs-in-summary": ("stats.py", 'done = [r for r in runs if r["status"] == "completed"]',
                                 'done = [r for r in runs if r["status"] != "failed"]',
                                 PI + "test_the_best_setting_is_chosen_on_validation_never_on_test"),
    "edge-with-two-settings": ("stats.py", "if len(keys) != 1 or len(next(iter(keys))) != 1 or len(rows) < 3:",
                               "if len(keys) != 1 or len(next(iter(keys))) != 1 or len(rows) < 2:",
                               "tests/test_stats.py::test_at_edge_needs_three_settings"),
    "unpaired-comparison": ("stats.py", "shared = sorted(set(mine) & set(best_tests))",
                            "shared = sorted(set(mine) & set(best_tests))[1:] or sorted(set(mine) & set(best_tests))",
                            PI + "test_the_best_setting_is_chosen_on_validation_never_on_test"),
    # -- issue 16's features (no --before: the code they mutate is new) ----------------------
    "bf16-on-a-t4": ("train.py", 'return "bf16" if tuple(capability) >= (8, 0)', 'return "bf16" if tuple(capability) >= (7, 0)',
                     GP + "test_precision_by_cuda_capability"),
    "one-scaler-for-all": ("train.py",
                           "self.scalers = [torch.amp.GradScaler(device.type, enabled=self.fp16) for _ in configs]",
                           "self.scalers = [torch.amp.GradScaler(device.type, enabled=self.fp16)] * len(configs)",
                           GP + "test_a_member_whose_fp16_gradients_overflow_leaves_the_others_unchanged"),
    "overflow-never-diverges": ("train.py", "overflowing = group.overflowing() - leaving", "overflowing = set()",
                                GP + "test_a_member_whose_fp16_gradients_overflow_leaves_the_others_unchanged"),
    "split-is-grouped": ("fused.py", 'if self.k == 1 or (form or self.kernels[name]) == "grouped":',
                         "if True:", GP + "test_grouped_and_split_forms_of_every_layer_agree"),
    "apart-on-member-0": ("fused.py", "h = act(F.conv2d(h, w[k], b[k], stride, padding))",
                          "h = act(F.conv2d(h, w[0], b[0], stride, padding))",
                          GP + "test_split_kernels_make_each_fused_run_its_run_alone_exactly"),
    "slower-kernel-kept": ("fused.py", "return {name: min(FORMS, key=lambda form:",
                           "return {name: max(FORMS, key=lambda form:", GP + "test_kernels_are_chosen_by_the_timings"),
    "out-of-memory-fails-the-group": ("sweep.py", "                if train.out_of_memory(err):",
                                      "                if False:",
                                      GP + "test_out_of_memory_splits_the_group_and_every_run_completes"),
    "slowest-k": ("sweep.py", "best = max(timed, key=lambda k: (timed[k], -k))",
                  "best = min(timed, key=lambda k: (timed[k], -k))",
                  GP + "test_pick_fuse_takes_the_fastest_k_by_a_clear_margin"),
    "search-goes-on-after-oom": ("sweep.py", "            table[k] = None\n            train.release_memory()\n            break",
                                 "            table[k] = None\n            train.release_memory()\n            continue",
                                 GP + "test_the_search_stops_at_the_first_k_out_of_memory"),
    "kernel-timing-draws-masks": ("fused.py", "            self.eval()\n            self.kernels = {name: \"grouped\"",
                                  "            self.kernels = {name: \"grouped\"",
                                  FU + "test_choosing_kernels_changes_no_weight_and_no_dropout_stream"),
    # -- issue 21's features ------------------------------------------------------------------
    "best-copied-not-linked": ("sweep.py", 'if kept["last"] and best_is_last:', "if False:",
                               DI + "test_a_run_whose_best_epoch_is_the_last_leaves_one_copy_of_its_weights"),
    "save-ignored": ("sweep.py", 'if state_dict is not None and save in ("both", "last"):',
                     "if state_dict is not None:", DI + "test_each_save_choice_keeps_what_it_says"),
    "disk-check-ignored": ("sweep.py", 'if needs["low"] > free and not args.no_disk_check:', "if False:",
                           DI + "test_a_sweep_too_large_for_the_disk_stops_before_training_and_goes_on_with_the_flag"),
    "resume-estimate-without-state": ("checkpoints.py", 'copies = 1 + optimizer_state_tensors(config["optimizer"])',
                                      "copies = 1", DI + "test_the_estimate_is_within_10_percent_of_what_a_sweep_writes"),
    # -- issues 17 and 19: outputs that agree, --tune-lr ----------------------------------------------
    "plan-ignored": ("results.py", "    pending = [key for key, config in planned.items() if not finished(latest.get(key), config)]",
                     "    pending = []", OA + "test_from_results_refuses_an_unfinished_sweep_and_takes_it_when_told"),
    "partial-accepted": ("main_consolidated.py", "    if problem and not allow_partial:", "    if False:",
                         OA + "test_from_results_refuses_an_unfinished_sweep_and_takes_it_when_told"),
    "plan-of-my-shard-only": ("sweep.py", "j.config for j in everything})", "j.config for j in jobs})",
                              TL + "test_shards_of_a_tuned_sweep_end_as_the_whole"),
    "stale-evaluation-shown": ("report.py", 'if data.get("run_id") is None or current.get(', "if False and current.get(",
                               OA + "test_a_retrained_model_never_shows_its_old_evaluation"),
    "old-evaluation-kept": ("sweep.py", "        forget_evaluations(out, experiment, stem)", "        pass",
                            OA + "test_a_retrained_model_never_shows_its_old_evaluation"),
    "tie-called-a-lead": ("report.py", "TIE = 0.005 ", "TIE = 0.0 ", OA + "test_report_words_a_tie_as_a_tie"),
    "impossible-record-read": ("results.py", "    return _impossible(run, name)", "    return None",
                               "tests/test_edge_input.py::test_records_that_cannot_be_true_are_refused_in_one_sentence"),
    "rate-chosen-on-test": ("stats.py", 'val, test = describe([r["best_val_acc"] for r in done]), describe([r["test_acc"] for r in done])',
                            'val, test = describe([r["test_acc"] for r in done]), describe([r["best_val_acc"] for r in done])',
                            TL + "test_each_setting_at_its_rate_chosen_on_validation"),
    "rate-tie-to-larger": ("stats.py", '(round(r["best_val_acc_mean"], 9), -r["lr"]))',
                           '(round(r["best_val_acc_mean"], 9), r["lr"]))',
                           TL + "test_a_tie_between_rates_goes_to_the_smaller_rate"),
    "tuning-ignored": ("stats.py", "    if is_tuned(results):\n        rows, best", "    if False:\n        rows, best",
                       TL + "test_each_setting_at_its_rate_chosen_on_validation"),
    "plan-before-device-resolved": ("sweep.py", "    everything = all_jobs(sweep, base, args)  #",
                                    '    everything = all_jobs(sweep, {**base, "device": "auto", "precision": "auto"}, args)  #',
                                    TL + "test_records_hold_the_resolved_device_and_precision"),
    "fixed-is-chosen": ("stats.py", 't["own_lr"] if which == "own" or', 't["own_lr"] if which == "never" or',
                        TL + "test_a_ranking_that_tuning_changes_is_shown_both_ways"),
}
NEW = ("bf16-on-a-t4", "one-scaler-for-all", "overflow-never-diverges", "split-is-grouped", "slower-kernel-kept",
       "out-of-memory-fails-the-group", "slowest-k", "search-goes-on-after-oom", "apart-on-member-0",
       "kernel-timing-draws-masks", "best-copied-not-linked", "save-ignored", "disk-check-ignored", "resume-estimate-without-state",
       "plan-ignored", "partial-accepted", "plan-of-my-shard-only", "stale-evaluation-shown", "old-evaluation-kept",
       "tie-called-a-lead", "impossible-record-read", "rate-chosen-on-test", "rate-tie-to-larger", "tuning-ignored",
       "fixed-is-chosen", "plan-before-device-resolved")

# the tests that existed before issue 20 and were meant to cover each new mutant's code
BEFORE = {
    "dropout-scale-p": FU + "test_each_fused_run_is_the_run_trained_alone",
    "dropout-in-eval": UP + "test_accuracy_is_measured_in_eval_mode_with_dropout_off",
    "partial-batch-as-full": "tests/test_train.py tests/test_distributed.py::test_two_gloo_processes_match_one_process",
    "ties-keep-last": UP + "test_best_val_acc_is_the_best_epoch",
    "resume-best-is-resume-epoch": "tests/test_train.py tests/test_evaluate.py tests/test_kill_resume.py",
    "resume-file-drops-best": "tests/test_train.py tests/test_evaluate.py tests/test_kill_resume.py",
    "test-at-best-is-last": "tests/test_evaluate.py::test_the_best_validation_epoch_is_kept_beside_the_last",
    "loss-per-batch": "tests/test_train.py",
    "same-order-every-epoch": "tests/test_train.py tests/test_transforms.py",
    "train-acc-from-eval": "tests/test_train.py",
    "no-fsync": "tests/test_user_promises.py tests/test_nothing_lost.py",
    "lock-on-a-removed-file": "tests/test_parallel_runs.py",
    "claim-released-early": "tests/test_parallel_runs.py::test_a_run_claimed_by_another_process_is_left_to_it",
    "record-under-wrong-job": "tests/test_parallel_runs.py tests/test_fusion.py",
    "finished-meanwhile-retrained": "tests/test_parallel_runs.py",
    "best-checkpoint-with-last-test-acc": "tests/test_evaluate.py",
    "groups-over-k": FU + "test_groups_are_few_and_even",
    "unsafe-load": "tests/test_train.py::test_atomic_save_and_load_checkpoint tests/test_nothing_lost.py",
    "confusion-transposed": "tests/test_evaluate.py::test_evaluate_reproduces_the_recorded_accuracy_with_class_names",
    "per-class-precision": "tests/test_evaluate.py::test_evaluate_reproduces_the_recorded_accuracy_with_class_names",
    "seed-plus-epoch": "tests/test_transforms.py",
    "last-batch-full-size": "tests/test_train.py tests/test_transforms.py",
    "best-on-test": "tests/test_stats.py",
    "checkpoint-test-acc-is-val": "tests/test_evaluate.py::"
                                  "test_evaluate_reproduces_the_recorded_accuracy_with_class_names",
    "rerun-retrains-finished": "tests/test_scripts_e2e.py::test_rerun_skips_completed_runs_and_fresh_retrains",
    "nan-in-json": "tests/test_scripts_e2e.py::test_divergence_is_recorded_and_the_sweep_goes_on",
    "records-lose-to-summary": "tests/test_scripts_e2e.py::test_rerun_skips_completed_runs_and_fresh_retrains",
    "diverged-runs-in-summary": "tests/test_stats.py",
    "unpaired-comparison": "tests/test_stats.py",
}

# mutants no test can tell from the right code, with the reason (kept so that nobody adds them again)
EQUIVALENT = {
    "dropout-scale-p at p = 0.5": "dividing by p instead of 1 - p is the same number at p = 0.5: the "
                                  "dropout-scale-p mutant is tested at p = 0.25 instead",
    "dropout seed offset removed (seed instead of seed + 2**40)": "the masks then come from a stream that "
                                  "starts like the initialisation's; every run is still reproducible and "
                                  "fused = alone, so only the statistical independence of the two streams "
                                  "changes, which no finite test of one run can tell",
}


def copy_of_repository(dest: str) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if not os.path.exists(os.path.join(ROOT, f)):
            continue  # deleted but not yet committed
        os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))


def caught(name: str, before: bool = False) -> bool:
    file, right, bug, tests = MUTANTS[name]
    if before:
        tests = BEFORE.get(name, tests)
    with tempfile.TemporaryDirectory() as dest:
        copy_of_repository(dest)
        path = os.path.join(dest, file)
        text = open(path).read()
        if text.count(right) != 1:
            raise SystemExit(f"{name}: {file} no longer contains the line it mutates exactly once; "
                             f"update tests/mutants.py")
        with open(path, "w") as f:
            f.write(text.replace(right, bug, 1))
        # the tests' files inside the copy, removed with it (a caught mutant fails a test, and a
        # failed session would otherwise keep its files on the RAM disk: tests/conftest.py)
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-n0", "-p", "no:cacheprovider",
                              "--basetemp", os.path.join(dest, ".pytest-files"), *tests.split()], cwd=dest,
                             capture_output=True, text=True)
    if run.returncode not in (0, 1):  # 0: passed (missed); 1: a test failed (caught)
        raise SystemExit(f"{name}: pytest could not run {tests} (exit {run.returncode}):\n{run.stdout[-2000:]}")
    return run.returncode == 1


def main(argv) -> int:
    before = "--before" in argv
    names = [a for a in argv if a != "--before"] or [n for n in MUTANTS if not (before and n in NEW)]
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise SystemExit(f"unknown mutant(s): {', '.join(unknown)}")
    missed = []
    for name in names:
        ok = caught(name, before)
        tests = BEFORE.get(name, MUTANTS[name][3]) if before else MUTANTS[name][3]
        print(f"{name:36s} {'caught' if ok else 'MISSED'} by {tests}", flush=True)
        if not ok:
            missed.append(name)
    print(f"\nscore: {len(names) - len(missed)} of {len(names)} mutants caught"
          + (f"; missed: {', '.join(missed)}" if missed else "")
          + f"\n{len(EQUIVALENT)} argued equivalent and not run (see EQUIVALENT in tests/mutants.py)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
