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

    .venv/bin/python tests/mutants.py --since 3d6a508 --sample 60  # mechanical mutants (below):
    .venv/bin/python tests/mutants.py --all --sample 40            # generated from the code, drawn
                                                                   # at random, run on the tests
                                                                   # that reach their line
"""
import ast
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UP = "tests/test_user_promises.py::"
FU = "tests/test_fusion.py::"
PI = "tests/test_pinned.py::"
TR = "tests/test_train.py::"
GP = "tests/test_gpu_paths.py::"
DI = "tests/test_disk.py::"
OA = "tests/test_outputs_agree.py::"
TL = "tests/test_tune_lr.py::"
BT = "tests/test_behaviours_training.py::"
BO = "tests/test_behaviours_outputs.py::"
TF = "tests/test_temp_files.py::"
NR = "tests/test_names_and_records.py::"
TE = "tests/test_tool_edges.py::"
DP = "tests/test_disk_and_plan.py::"

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
    "quick-preset": ("core/flags.py", "test_size=1000, epochs=5)", "test_size=1000, epochs=3)",
                     UP + "test_the_quick_preset_is_the_documented_one"),
    "write-in-place": ("core/storage.py", "    tmp = temporary_name(path)\n", "    tmp = path\n",
                       UP + "test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary"),
    "failed-run-loses-resume": ("core/recording.py", "    if state_dict is not None and os.path.exists(resume):",
                                "    if os.path.exists(resume):",
                                UP + "test_a_run_failing_after_a_checkpoint_resumes_on_rerun"),
    "one-dropout-generator": ("core/fused_layers.py", "generator=self.generators[k]", "generator=self.generators[0]",
                              FU + "test_each_fused_run_is_the_run_trained_alone"),
    "one-learning-rate": ("train.py", 'make_optimizer(c["optimizer"], p, c["lr"])',
                          'make_optimizer(c["optimizer"], p, configs[0]["lr"])',
                          FU + "test_each_fused_run_is_the_run_trained_alone"),
    "group-drops-resume-states": ("train.py", "            if state is None:\n",
                                  "            if state is None or len(configs) > 1:\n",
                                  FU + "test_a_fused_run_resumes_alone_and_a_run_alone_resumes_fused"),
    "one-activation": ("core/fused_layers.py", "if len(set(names)) == 1 else", "if True else",
                       FU + "test_each_fused_run_is_the_run_trained_alone"),
    "shared-penalty": ("core/fused_layers.py", "            total = total + l1 * rows.abs().sum(1)",
                       "            total = total + l1[0] * rows.abs().sum(1)",
                       TR + "test_weight_penalty_is_each_runs_own_l1_l2_and_elastic_net_with_biases"),
    # -- fused.py ---------------------------------------------------------------------------
    "dropout-scale-p": ("core/fused_layers.py", ".div_(1 - p)\n", ".div_(p)\n", PI + "test_fused_dropout_scales_as_nn_dropout"),
    "dropout-in-eval": ("core/fused_layers.py", "if not self.training or p == 0:", "if p == 0:",
                        PI + "test_fused_dropout_scales_as_nn_dropout"),
    "fc-views-of-member-0": ("core/fused_layers.py", "        return t[k]", "        return t[0]",
                             FU + "test_each_fused_run_is_the_run_trained_alone"),
    "l2-as-l1": ("core/fused_layers.py", "            total = total + l2 * rows.pow(2).sum(1)",
                 "            total = total + l2 * rows.abs().sum(1)",
                 TR + "test_weight_penalty_is_each_runs_own_l1_l2_and_elastic_net_with_biases"),
    "inputs-swapped": ("core/fused.py", "torch.cat(parts, 1)", "torch.cat(parts[::-1], 1)",
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
    "loss-per-batch": ("train.py", 'losses = [loss / images for loss, _ in totals]',
                       'losses = [loss / len(split.train) for loss, _ in totals]',
                       PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    "resume-without-optimizer": ("train.py", 'optimizer.load_state_dict(state["optimizer"])', "pass",
                                 TR + "test_in_process_resume_reproduces_the_uninterrupted_run"),
    "same-order-every-epoch": ("train.py", "active.seeds(), epoch,", "active.seeds(), 0,",
                               PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    "checkpoint-every-inverted": ("train.py", '(epoch + 1) % config["checkpoint_every"] == 0',
                                  '(epoch + 1) % config["checkpoint_every"] != 0', TR + "test_checkpoint_every"),
    "train-acc-from-eval": ("train.py", "train_accs = ([correct / images for _, correct in totals]",
                            "train_accs = ([correct / len(split.train) for _, correct in totals]",
                            PI + "test_the_last_partial_batch_is_the_mean_over_its_own_images"),
    # -- results.py -------------------------------------------------------------------------
    "failed-counts-as-finished": ("core/results.py", 'return bool(run) and run["status"] in ("completed", "diverged")',
                                  'return bool(run) and run["status"] in STATUSES',
                                  UP + "test_a_run_failing_after_a_checkpoint_resumes_on_rerun"),
    "nan-in-json": ("core/results.py", "if isinstance(value, float) and not math.isfinite(value):",
                    "if False:", PI + "test_results_files_are_standard_json_with_nan_and_infinity_as_null"),
    "records-lose-to-summary": ("core/results.py",
                                'by_key.update({(r["name"], r["seed"]): r for r in read_records(out, experiment)})',
                                'by_key = {**{(r["name"], r["seed"]): r for r in read_records(out, experiment)}, '
                                '**by_key}',
                                PI + "test_a_runs_own_record_wins_over_an_older_merged_results_file"),
    # -- storage.py -------------------------------------------------------------------------
    "no-fsync": ("core/storage.py", "os.fsync(f.fileno())", "pass",
                 PI + "test_a_file_is_on_disk_before_it_replaces_the_previous_one"),
    "signal-during-write-lost": ("core/storage.py", "_deferred.append(signum)", "None",
                                 "tests/test_nothing_lost.py::"
                                 "test_ctrl_c_inside_a_results_write_keeps_the_previous_file"),
    "lock-on-a-removed-file": ("core/storage.py", "if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:", "if True:",
                               PI + "test_a_lock_whose_file_was_removed_is_taken_on_the_new_file"),
    # -- sweep.py ---------------------------------------------------------------------------
    "claim-released-early": ("core/claims.py", "claims.append(claim)", "claim.release()",
                             PI + "test_a_run_is_claimed_while_it_trains_and_released_after"),
    "record-under-wrong-job": ("sweep.py", "record(ctx, training, part[i], outcome, part, statuses)",
                               "record(ctx, training, part[0], outcome, part, statuses)",
                               PI + "test_each_record_is_its_own_runs_when_a_member_is_held_elsewhere"),
    "finished-meanwhile-retrained": ("core/claims.py",
                                     'if finished(latest.get((job.name, job.config["seed"])), job.config):',
                                     "if False:",
                                     PI + "test_a_run_finished_meanwhile_by_another_process_is_not_retrained"),
    "shard-off-by-one": ("core/plan.py", "jobs[shard[0] - 1::shard[1]]", "jobs[shard[0]::shard[1]]",
                         "tests/test_parallel_runs.py::test_shards_one_after_another_make_the_whole_sweep"),
    "most-loaded-rank": ("core/plan.py", "min(range(world), key=lambda i: (loads[i], i))",
                         "max(range(world), key=lambda i: (loads[i], i))", UP + "test_work_is_balanced_over_ranks"),
    "best-checkpoint-with-last-test-acc": ("core/recording.py",
                                           'best = {**record, "test_acc": record.get("test_acc_at_best")}',
                                           "best = dict(record)",
                                           PI + "test_test_acc_at_best_is_the_best_epochs_when_it_comes_before_the_last"),
    "groups-over-k": ("core/plan.py", "n = -(-len(bucket) // k)", "n = max(1, len(bucket) // k)",
                      PI + "test_fused_groups_are_never_larger_than_k_and_even"),
    "rerun-retrains-finished": ("core/plan.py", "        if finished(old, job.config):\n",
                                "        if False:\n", PI + "test_finished_runs_are_left_out_before_the_groups_are_made"),
    # -- checkpoints.py ---------------------------------------------------------------------
    "best-overwrites-last": ("core/checkpoints.py", 'f"{stem}.best.pt"', 'f"{stem}.pt"',
                             "tests/test_evaluate.py::test_the_best_validation_epoch_is_kept_beside_the_last"),
    "unsafe-load": ("core/checkpoints.py", 'weights_only=True, map_location="cpu", mmap=mmap',
                    'weights_only=False, map_location="cpu", mmap=mmap',
                    PI + "test_a_checkpoint_holding_code_is_refused"),
    "checkpoint-test-acc-is-val": ("core/checkpoints.py", '"test_acc": record["test_acc"], "best_val_acc"',
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
    "best-on-test": ("core/stats.py", 'key=lambda r: r["best_val_acc_mean"])', 'key=lambda r: r["test_acc_mean"])',
                     PI + "test_the_best_setting_is_chosen_on_validation_never_on_test"),
    "population-std": ("core/stats.py", "std = float(x.std(ddof=1))", "std = float(x.std())",
                       "tests/test_stats.py::test_describe_from_first_principles"),
    "diverged-runs-in-summary": ("core/stats.py", 'done = [r for r in runs if r["status"] == "completed"]',
                                 'done = [r for r in runs if r["status"] != "failed"]',
                                 PI + "test_the_best_setting_is_chosen_on_validation_never_on_test"),
    "edge-with-two-settings": ("core/stats.py", "if len(keys) != 1 or len(next(iter(keys))) != 1 or len(rows) < 3:",
                               "if len(keys) != 1 or len(next(iter(keys))) != 1 or len(rows) < 2:",
                               "tests/test_stats.py::test_at_edge_needs_three_settings"),
    "unpaired-comparison": ("core/stats.py", "shared = sorted(set(mine) & set(best_tests))",
                            "shared = sorted(set(mine) & set(best_tests))[1:] or sorted(set(mine) & set(best_tests))",
                            PI + "test_the_best_setting_is_chosen_on_validation_never_on_test"),
    # -- issue 16's features (no --before: the code they mutate is new) ----------------------
    "bf16-on-a-t4": ("core/device.py", 'return "bf16" if tuple(capability) >= (8, 0)', 'return "bf16" if tuple(capability) >= (7, 0)',
                     GP + "test_precision_by_cuda_capability"),
    "one-scaler-for-all": ("train.py",
                           "self.scalers = [torch.amp.GradScaler(device.type, enabled=self.fp16) for _ in configs]",
                           "self.scalers = [torch.amp.GradScaler(device.type, enabled=self.fp16)] * len(configs)",
                           GP + "test_a_member_whose_fp16_gradients_overflow_leaves_the_others_unchanged"),
    "overflow-never-diverges": ("train.py", "overflowing = active.group.overflowing() - leaving", "overflowing = set()",
                                GP + "test_a_member_whose_fp16_gradients_overflow_leaves_the_others_unchanged"),
    "split-is-grouped": ("core/fused_layers.py", 'CONV_FORMS = {"grouped": GroupedConv2d, "split": SplitConv2d}',
                         'CONV_FORMS = {"grouped": GroupedConv2d, "split": GroupedConv2d}', GP + "test_grouped_and_split_forms_of_every_layer_agree"),
    "apart-on-member-0": ("core/fused.py", 'h = act(F.conv2d(h, params[f"{name}.weight"], params[f"{name}.bias"],',
                          'h = act(F.conv2d(h, self.member_params[0][f"{name}.weight"], self.member_params[0][f"{name}.bias"],',
                          GP + "test_split_kernels_make_each_fused_run_its_run_alone_exactly"),
    "slower-kernel-kept": ("core/kernels.py", "return {name: min(FORMS, key=lambda form:",
                           "return {name: max(FORMS, key=lambda form:", GP + "test_kernels_are_chosen_by_the_timings"),
    "out-of-memory-fails-the-group": ("sweep.py", "    if out_of_memory(err) and len(left) > 1:",
                                      "    if False:",
                                      GP + "test_out_of_memory_splits_the_group_and_every_run_completes"),
    "slowest-k": ("core/fuse_k.py", "best = max(timed, key=lambda k: (timed[k], -k))",
                  "best = min(timed, key=lambda k: (timed[k], -k))",
                  GP + "test_pick_fuse_takes_the_fastest_k_by_a_clear_margin"),
    "search-goes-on-after-oom": ("core/fuse_k.py", "        if not fitted:\n            break",
                                 "        if not fitted:\n            continue",
                                 GP + "test_the_search_stops_at_the_first_k_out_of_memory"),
    "kernel-timing-draws-masks": ("core/fused.py", "            self.eval()\n            self.kernels = {name: \"grouped\"",
                                  "            self.kernels = {name: \"grouped\"",
                                  FU + "test_choosing_kernels_changes_no_weight_and_no_dropout_stream"),
    # -- issue 21's features ------------------------------------------------------------------
    "best-copied-not-linked": ("core/recording.py", 'if kept["last"] and best_is_last:', "if False:",
                               DI + "test_a_run_whose_best_epoch_is_the_last_leaves_one_copy_of_its_weights"),
    "save-ignored": ("core/recording.py", 'if save in ("both", "last"):',
                     "if True:", DI + "test_each_save_choice_keeps_what_it_says"),
    "disk-check-ignored": ("core/disk.py", 'if needs["low"] > free and not no_disk_check:', "if False:",
                           DI + "test_a_sweep_too_large_for_the_disk_stops_before_training_and_goes_on_with_the_flag"),
    "resume-estimate-without-state": ("core/disk.py", 'copies = 1 + optimizer_state_tensors(optimizer)',
                                      "copies = 1", DI + "test_the_estimate_is_within_10_percent_of_what_a_sweep_writes"),
    # -- issues 17 and 19: outputs that agree, --tune-lr ----------------------------------------------
    "plan-ignored": ("core/results.py", "    pending = [key for key, config in planned.items() if not finished(latest.get(key), config)]",
                     "    pending = []", OA + "test_from_results_refuses_an_unfinished_sweep_and_takes_it_when_told"),
    "partial-accepted": ("main_consolidated.py", "    if problem and not allow_partial:", "    if False:",
                         OA + "test_from_results_refuses_an_unfinished_sweep_and_takes_it_when_told"),
    "plan-of-my-shard-only": ("sweep.py", "j.config for j in ctx.everything})", "j.config for j in jobs})",
                              TL + "test_shards_of_a_tuned_sweep_end_as_the_whole"),
    "stale-evaluation-shown": ("report.py", 'if data.get("run_id") is None or current.get(', "if False and current.get(",
                               OA + "test_a_retrained_model_never_shows_its_old_evaluation"),
    "old-evaluation-kept": ("core/recording.py", "        forget_evaluations(out, experiment, stem)", "        pass",
                            OA + "test_a_retrained_model_never_shows_its_old_evaluation"),
    "tie-called-a-lead": ("report.py", "TIE = 0.005 ", "TIE = 0.0 ", OA + "test_report_words_a_tie_as_a_tie"),
    "impossible-record-read": ("core/results.py", "    return problem or _impossible(run, name)", "    return problem",
                               "tests/test_edge_input.py::test_records_that_cannot_be_true_are_refused_in_one_sentence"),
    "rate-chosen-on-test": ("core/stats.py", 'val, test = describe([r["best_val_acc"] for r in done]), describe([r["test_acc"] for r in done])',
                            'val, test = describe([r["test_acc"] for r in done]), describe([r["best_val_acc"] for r in done])',
                            TL + "test_each_setting_at_its_rate_chosen_on_validation"),
    "rate-tie-to-larger": ("core/stats.py", '(round(r["best_val_acc_mean"], 9), -r["lr"]))',
                           '(round(r["best_val_acc_mean"], 9), r["lr"]))',
                           TL + "test_a_tie_between_rates_goes_to_the_smaller_rate"),
    "tuning-ignored": ("core/stats.py", "    if is_tuned(results):\n        rows, best", "    if False:\n        rows, best",
                       TL + "test_each_setting_at_its_rate_chosen_on_validation"),
    "plan-before-device-resolved": ("sweep.py", "    jobs = plan(sweep, base, args.seeds, tunes)",
                                    '    jobs = plan(sweep, {**base, "device": "auto", "precision": "auto"}, args.seeds, tunes)',
                                    TL + "test_records_hold_the_resolved_device_and_precision"),
    "fixed-is-chosen": ("core/stats.py", 't["own_lr"] if which == "own" or', 't["own_lr"] if which == "never" or',
                        TL + "test_a_ranking_that_tuning_changes_is_shown_both_ways"),
    # -- issue 27's ten behaviours (each test written from the docs, then shown to fail on its mutant) ----
    "precision-of-device-0": ("core/device.py", "capability = torch.cuda.get_device_capability(device) if",
                              "capability = torch.cuda.get_device_capability() if",
                              BT + "test_auto_precision_reads_the_capability_of_the_device_passed"),
    "scaler-of-member-0-saved": ("train.py", '"scaler": self.scalers[k].state_dict(),',
                                 '"scaler": self.scalers[0].state_dict(),',
                                 BT + "test_fp16_members_keep_their_own_loss_scales_through_a_member_leaving_and_a_resume"),
    "finished-member-recorded-again": ("sweep.py", 'left = [job for job in part if statuses[job.stem] == "skipped"]',
                                       "left = list(part)",
                                       BT + "test_an_error_after_a_member_diverged_leaves_its_record_as_it_was"),
    "cpu-oom-not-split": ("core/device.py", "\"out of memory\", \"can't allocate memory\", \"CUBLAS_STATUS_ALLOC_FAILED\",",
                          '"out of memory", "CUBLAS_STATUS_ALLOC_FAILED",',
                          BT + "test_the_cpu_allocators_out_of_memory_error_splits_the_group"),
    "replan-keeps-old-config": ("core/results.py", "planned.update(configs)", "planned = {**configs, **planned}",
                                BT + "test_a_run_planned_again_with_another_config_is_unfinished_until_retrained"),
    "report-evaluation-by-setting-name": ("report.py", 'current.get((data.get("name"), data.get("seed")))',
                                          'current.get((run, data.get("seed")))',
                                          BO + "test_evaluations_of_seeded_runs_and_of_a_best_checkpoint_are_shown_in_the_report"),
    "save-leaves-stale-best": ("core/recording.py", '(("last", last_path), ("best", best_path)):', '(("last", last_path),):',
                               BO + "test_save_over_an_earlier_training_leaves_no_stale_best_file"),
    "bottom-edge-not-flagged": ("core/stats.py", 'chosen in (rates[0]["lr"],', 'chosen in (rates[-1]["lr"],',
                                BO + "test_a_rate_chosen_at_either_end_of_the_grid_is_flagged_as_at_the_edge"),
    "tuned-rate-of-another-optimizer": ("main_consolidated.py", 'tuned_rates[ablation] = (row["lr"], optimizer)',
                                        'tuned_rates[ablation] = (row["lr"], chosen["optimizer"])',
                                        BO + "test_from_results_takes_no_tuned_rate_from_a_sweep_of_another_optimizer"),
    "disk-check-on-the-high-estimate": ("core/disk.py", 'if needs["low"] > free and not no_disk_check:',
                                        'if needs["high"] > free and not no_disk_check:',
                                        BO + "test_free_space_between_the_least_and_the_most_a_sweep_writes_warns_and_trains"),
    # -- issue 28's defects ----------------------------------------------------------------------
    "temp-name-prefix-match": ("core/storage.py", "match = TEMPORARY_NAME.fullmatch(name)", "match = TEMPORARY_NAME.match(name)",
                               TF + "test_a_rerun_removes_its_own_runs_temporary_files_and_nothing_else"),
    "merged-temp-not-cleaned": ("core/results.py", "return [results_path(out, experiment), csv_path", "return [csv_path",
                                TF + "test_sigkill_inside_a_write_leaves_a_temporary_file_that_the_rerun_removes"),
    "rates-that-print-alike": ("core/plan.py", "        if len(set(shown)) < len(shown):", "        if False:",
                               NR + "test_rates_that_print_alike_are_refused_before_the_data_loads"),
    "repeated-run-accepted": ("sweep.py", "    if repeated:", "    if False:",
                              NR + "test_a_plan_that_names_two_runs_alike_is_refused"),
    "damaged-tune-read": ("core/results.py", "        if not ok(tune.get(key)):", "        if False:",
                          NR + "test_a_damaged_tuned_record_is_refused_in_one_sentence"),
    "best-epoch-past-the-end": ("core/results.py", "    if best is not None and done is not None and best > done:",
                                "    if best is not None and done is not None and best > done + 1:",
                                NR + "test_a_damaged_tuned_record_is_refused_in_one_sentence"),
    "one-class-accepted": ("data.py", "if len(present) < 2:", "if len(present) < 1:",
                           TE + "test_an_idx_dataset_of_one_class_is_refused_before_training"),
    "bench-image-size-uncapped": ("bench.py", "type=functools.partial(image_size, smallest=MIN_IMAGE_SIZE), default=227",
                                  "type=positive_int, default=227",
                                  TE + "test_bench_caps_the_image_size_as_the_training_scripts_do"),
    "plotting-reads-others-json": ("plotting.py", "names = [name for name in found if name not in others]",
                                   "names = found", TE + "test_plotting_skips_and_names_json_files_no_sweep_wrote"),
    "deleted-last-blamed-on-save-best": ("evaluate.py", 'if save == ("last" if best else "best"):',
                                         'if save in ("both", "last" if best else "best"):',
                                         TE + "test_a_deleted_last_checkpoint_is_not_blamed_on_save_best"),
    "resume-counted-after-last-epoch": ("core/disk.py", 'return (start // every + 1) * every < config["epochs"]',
                                        'return (start // every + 1) * every <= config["epochs"]',
                                        DP + "test_the_estimate_counts_a_resume_file_only_where_a_run_has_an_epoch_after_which_one_is_due"),
    "forget-pending-drops-own": ("core/results.py", "if key not in keep and not finished(", "if key in keep and not finished(",
                                 DP + "test_a_narrowed_sweep_names_what_its_plan_still_holds_and_forget_pending_drops_it"),
    "presence-not-shared": ("core/storage.py", "fcntl.flock(self.file, fcntl.LOCK_SH)", "fcntl.flock(self.file, fcntl.LOCK_UN)",
                            DP + "test_forget_pending_drops_nothing_while_another_sweep_of_the_experiment_is_under_way"),
    # -- issue 29's CUDA paths, pinned on CPU ---------------------------------------------------------
    "oom-halves-dropped": ("sweep.py", "        for half in halves:\n            train_part(ctx, training, half, statuses)",
                             "        for half in halves:\n            pass",
                             GP + "test_the_failed_group_is_freed_before_either_half_is_built"),
    "leaving-group-kept": ("train.py", "        self.model = self.params = self.optimizers = None\n",
                           "        pass\n", GP + "test_a_group_a_member_leaves_is_freed_before_the_smaller_group_is_built"),
    "fused-adagrad-trusted": ("core/optimizers.py", "            cls([trial], lr=1e-3, fused=True, **extra).step()",
                              "            cls([trial], lr=1e-3, fused=True, **extra)",
                              "tests/test_optimizers.py::test_an_optimizer_without_a_fused_kernel_for_the_device_takes_the_plain_one"),
    "ddp-dropout-own-rows": ("core/fused_layers.py", "return mask if rows is None else mask[rows[0]::rows[1]]",
                             "return mask if rows is None else mask[:part.shape[0]]",
                             "tests/test_distributed.py::test_each_process_of_a_data_parallel_batch_draws_the_single_process_dropout_masks"),
    "spread-waits-at-a-barrier": ("sweep.py", '        wait_for_ranks("recorded", ctx.world)', "        dist.barrier()",
                                  "tests/test_distributed.py::test_spread_ranks_with_uneven_shares_outwait_any_barrier_timeout"),
    "emulated-precision-kept": ("evaluate.py", "    if recorded == \"auto\" or recorded in native:", "    if True:",
                                GP + "test_evaluate_uses_the_recorded_precision_only_where_the_device_has_it"),
    "gpu-check-tiny-limited": ("gpu_check.py", "limit = None if self.args.tiny else LIMITS[name]", "limit = LIMITS[name]",
                               "tests/test_gpu_check.py::test_the_tiny_check_sets_no_time_limit"),
    # -- issue 30's: each ablation declared once, in its own script -----------------------
    "lr-winner-for-any-optimizer": ("main_consolidated.py", "    if needs and chosen.get(needs.key) != needs.value:",
                                    "    if False:",
                                    "tests/test_report.py::test_consolidated_from_results_ignores_the_adam_lr_for_sgd"),
    "winners-in-report-order": ("core/ablation.py", "return sorted(deciding, key=lambda a: not required & set(a.decides))",
                                "return deciding", "tests/test_report.py::test_consolidated_from_results_takes_each_best"),
    "tune-lr-for-the-rate-sweep": ("core/flags.py", "    if tune_lr:", "    if True:",
                                   TL + "test_the_learning_rate_sweep_has_no_tune_lr"),
}
NEW = ("bf16-on-a-t4", "one-scaler-for-all", "overflow-never-diverges", "split-is-grouped", "slower-kernel-kept",
       "out-of-memory-fails-the-group", "slowest-k", "search-goes-on-after-oom", "apart-on-member-0",
       "kernel-timing-draws-masks", "best-copied-not-linked", "save-ignored", "disk-check-ignored", "resume-estimate-without-state",
       "plan-ignored", "partial-accepted", "plan-of-my-shard-only", "stale-evaluation-shown", "old-evaluation-kept",
       "tie-called-a-lead", "impossible-record-read", "rate-chosen-on-test", "rate-tie-to-larger", "tuning-ignored",
       "fixed-is-chosen", "plan-before-device-resolved")
ISSUES_27_TO_29 = ("precision-of-device-0", "scaler-of-member-0-saved", "finished-member-recorded-again", "cpu-oom-not-split", "replan-keeps-old-config", "report-evaluation-by-setting-name", "save-leaves-stale-best", "bottom-edge-not-flagged", "tuned-rate-of-another-optimizer", "disk-check-on-the-high-estimate", "temp-name-prefix-match", "merged-temp-not-cleaned", "rates-that-print-alike", "repeated-run-accepted", "damaged-tune-read", "best-epoch-past-the-end", "one-class-accepted", "bench-image-size-uncapped", "plotting-reads-others-json", "deleted-last-blamed-on-save-best", "resume-counted-after-last-epoch", "forget-pending-drops-own", "presence-not-shared", "oom-halves-dropped", "leaving-group-kept", "fused-adagrad-trusted", "ddp-dropout-own-rows", "spread-waits-at-a-barrier", "emulated-precision-kept", "gpu-check-tiny-limited")
NEW += ISSUES_27_TO_29  # --before: all of it is code or tests of issues 27 to 29
NEW += ("lr-winner-for-any-optimizer", "winners-in-report-order", "tune-lr-for-the-rate-sweep")  # issue 30's code

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
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode == 0:
        files = listed.stdout.split()
    else:  # ROOT is itself a copy, without .git (a mechanical mutant's run of the whole suite)
        skip = {".git", ".venv", ".mutants", "__pycache__", ".pytest_cache", ".pytest-files"}
        files = [os.path.relpath(os.path.join(folder, f), ROOT) for folder, dirs, names in os.walk(ROOT)
                 if not dirs.__setitem__(slice(None), [d for d in dirs if d not in skip]) for f in names]
    for f in files:
        if not os.path.exists(os.path.join(ROOT, f)):
            continue  # deleted but not yet committed
        os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))


def _plain_env() -> dict:
    """The environment without the coverage map's settings (a test runs this file while the map
    is built: its own pytest is not part of the map)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "MUTANTS_COVERAGE", "MUTANTS_TEST_ID")}


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
                             capture_output=True, text=True, env=_plain_env())
    if run.returncode not in (0, 1):  # 0: passed (missed); 1: a test failed (caught)
        raise SystemExit(f"{name}: pytest could not run {tests} (exit {run.returncode}):\n{run.stdout[-2000:]}")
    return run.returncode == 1


# =============================================================================================
# Mechanical mutants: generated from the code itself, not chosen
#
#     .venv/bin/python tests/mutants.py --since 3d6a508 --sample 60   # lines changed since a commit
#     .venv/bin/python tests/mutants.py --all --sample 40             # the whole code
#     .venv/bin/python tests/mutants.py --since 3d6a508 --list        # the sample only, nothing run
#
# Every mutant of the candidate lines (the *.py files' lines (top level and core/) added or changed since
# REV, or all of them) is listed in a fixed order; N of them are drawn with a seed taken from
# the HEAD commit's id. Each runs on the tests that reach its line in a coverage map of the whole
# suite with one context per test (the processes a test starts included), or on the whole suite
# where the map has none. Results go to .mutants/report-*.json as they come, so that a run cut
# short goes on where it stopped when started again.

# mechanical mutants no test can tell from the right code: id (as the report prints it): the reason
MECHANICAL_EQUIVALENT = {
    "core/claims.py:f7781144#1:return-none:0": "take_run's 'finished meanwhile' return False -> None: its one "
                                               "caller keeps the jobs whose answer is true (claim_runs' `if "
                                               "taken`, under ddp after a broadcast of the list), and None is "
                                               "false as False is",
    "sweep.py:4d3e2996:not-dropped:0": "gc.freeze() when nothing is frozen yet -> only when something is: what the "
                                       "garbage collector walks, not what a sweep computes, writes or prints (the "
                                       "freeze keeps the imports' objects out of later collections, for speed; "
                                       "speed is bench.py's to measure, not a test's)",
    "plotting.py:b867db21:int+1:0": "(922a8e1's sample) the curves' markers 4 -> 5 points: cosmetic; what the docs "
                                    "promise (a marker on each epoch up to 20 epochs) holds at either size",
    "plotting.py:b12aeeb0:int+1:0": "(922a8e1's sample) a legend drawn where the axes have labelled handles "
                                    "(get_legend_handles_labels()[0]) -> labels ([1]): the two lists are always "
                                    "of one length, so both are empty or neither",
    "train.py:38b491a0:int+1:0": "(922a8e1's sample; the line is core/device.py's keep_freed_memory now) mallopt's "
                                 "M_TRIM_THRESHOLD (-1) -> M_TOP_PAD (-2) set to 2 GB: either way a freed block "
                                 "under 2 GB stays in the process for the next step, which is what the docs "
                                 "promise; they part only where one free leaves over 2 GB at the heap's top (the "
                                 "threshold then gives it back, the pad keeps 2 GB), beyond the suite's memory",
    "core/optimizers.py:33cb9510:int+1:0": "the fused-kernel trial step on a 2-element parameter instead of 1: "
                                           "whether torch has a fused kernel for an optimizer on a device does not "
                                           "depend on the parameter's size, and the trial's result is only that "
                                           "yes or no (the trial tensor is thrown away)",
    "core/stats.py:c1b280b3:int+1:0": "round(mean, 9) -> round(mean, 10) in the choice of a tuned rate: the rounding "
                                 "only makes means that differ by float error (about 1e-16) tie; two means of "
                                 "accuracies (counts / N) that really differ do so by at least 1 / (N x seeds), "
                                 "over 1e-7 for any split and seed count a sweep can have, so 9 and 10 digits "
                                 "tie and part exactly the same means",
    "bench.py:f28a1406:int+1:0": "(c1c1b28's sample) bench.py's study loop seeded 1 instead of 0 in step mode: "
                                 "that mode reports images/s only, and a seed sets only initial weights and the "
                                 "synthetic batches' order, which change no step's work (dense kernels of fixed "
                                 "shapes, no branch on the values); the job mode, whose accuracies a seed would "
                                 "change, seeds on its own line",
    "core/disk.py:acd0dd56:int+1:1": "(c1c1b28's sample) a checkpoint's non-weight bytes bounded by 256 x 1025 "
                                     "instead of 256 x 1024: the bound is an upper one ('at most'), and 256 bytes "
                                     "more a file moves the disk estimate by under 1e-5 of the smallest "
                                     "checkpoint; the docs promise the estimate within 10% of what a sweep writes, "
                                     "and the refusal moves only where free space lies within those bytes of it",
    "train.py:9012f87f:compare:0": "(c1c1b28's sample) a resume file's parts checked with `<` (a proper subset) "
                                   "for `<=`: the line is reached only after the file's config, epoch and "
                                   "history were read from it, so its keys always hold more than model, "
                                   "optimizer, scaler and rng, and the four are a proper subset exactly where "
                                   "they are a subset",
    # not a behaviour: how a figure is styled, where no doc promises it (docs/tests.md: mechanical mutants)
    "plotting.py:013ba53d:int+1:0": "the test plot's legend in 9-point type instead of 8: cosmetic; what the docs "
                                    "promise of it (beside the bars, never over them) holds at either size",
    "plotting.py:b78b8f6c:int+1:1": "the seed dots' zorder 3 -> 4: both draw the dots over the bars (zorder 1) and "
                                    "their error bars (2); what the docs promise, each seed's value beside its bar, "
                                    "holds at either",
    "core/tensorboard.py:5cca1a15:int+1:0": "HPARAMS's 'epochs': 0 -> 1: HPARAMS only declares each column's type for "
                                            "the HParams table (write_end keeps the experiment summary of that call "
                                            "and drops its values); each run's own epochs are written from its config",
}

MUTANTS_DIR = os.path.join(ROOT, ".mutants")
SAFETY_TIMEOUT = 20 * 60  # seconds a mutant's tests may take before it is reported as "timeout"

COMPARE_TO = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
              ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
ARITHMETIC_TO = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
                 ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
                 ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitOr}
TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
        ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
        ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>",
        ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.And: "and", ast.Or: "or"}
KINDS = ("compare", "and-or", "not-dropped", "arithmetic", "int+1", "return-none", "call-dropped", "slice+1",
         "slice-1")


class Source:
    """A file's text with ast positions (line, UTF-8 byte column) turned into character offsets."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="replace"))

    def span(self, node) -> tuple:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def line_of(self, offset: int) -> int:
        import bisect
        return bisect.bisect_right(self.starts, offset)


def _token(src: Source, start: int, end: int, text: str):
    """(start, end) of the operator `text` between two operands (only brackets, blanks and
    comments besides it), or None where it is not there exactly once."""
    between = src.text[start:end]
    blanked = re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), between)
    word = r"\s+".join(re.escape(w) for w in text.split())
    pattern = rf"(?<![\w]){word}(?![\w])" if text[0].isalpha() else rf"(?<![<>=!*/%&|^]){word}(?![<>=*/])"
    found = list(re.finditer(pattern, blanked))
    if len(found) != 1:
        return None
    return start + found[0].start(), start + found[0].end()


def _replace(parent, old, new) -> None:
    """Put new in old's place among parent's fields."""
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise ValueError("node not found in its parent")


def _mutations(src: Source, tree) -> list:
    """Every mutation of a parsed file: dicts with kind, what, line (the mutated token's),
    stmt_line (its statement's first line), node (index in ast.walk order), edits [(start, end,
    text)] and change (what it does to the tree: used to check the edits)."""
    nodes = list(ast.walk(tree))
    parent = {}
    for node in nodes:
        for child in ast.iter_child_nodes(node):
            parent[child] = node
    index = {id(node): i for i, node in enumerate(nodes)}
    skipped = set()
    for node in nodes:
        if isinstance(node, ast.JoinedStr):  # positions inside f-strings are not reliable before 3.12
            skipped.update(id(n) for n in ast.walk(node))
        for hint in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if isinstance(hint, ast.AST):  # type hints: str | None is not arithmetic
                skipped.update(id(n) for n in ast.walk(hint))

    def at_call_time(node) -> bool:
        """Whether node runs inside a function (not at import: a module's or class's own lines,
        decorators, default values)."""
        child, up = node, parent.get(node)
        while up is not None:
            if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef)) and child in up.body:
                return True
            if isinstance(up, ast.Lambda) and child is up.body:
                return True
            child, up = up, parent.get(up)
        return False

    def statement_line(node) -> int:
        while not isinstance(node, ast.stmt) and node in parent:
            node = parent[node]
        return getattr(node, "lineno", 1)

    found = []

    def add(node, kind, what, line, edits, change):
        found.append(dict(kind=kind, what=what, line=line, stmt_line=statement_line(node), node=index[id(node)],
                          edits=edits, change=change, call_time=at_call_time(node)))

    def wrap(node) -> list:
        start, end = src.span(node)
        return [(start, start, "("), (end, end, ")")]

    for node in nodes:
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                new = COMPARE_TO.get(type(op))
                where = new and _token(src, src.span(operands[i])[1], src.span(operands[i + 1])[0], TEXT[type(op)])
                if where:
                    add(node, "compare", f"{TEXT[type(op)]} -> {TEXT[new]}", src.line_of(where[0]),
                        [(*where, TEXT[new])], lambda n, p, i=i, new=new: n.ops.__setitem__(i, new()))
        elif isinstance(node, ast.BoolOp):
            old, new = type(node.op), ast.Or if isinstance(node.op, ast.And) else ast.And
            tokens = [_token(src, src.span(a)[1], src.span(b)[0], TEXT[old]) for a, b in zip(node.values, node.values[1:])]
            if all(tokens):
                edits = [(*t, TEXT[new]) for t in tokens] + wrap(node)
                for value in node.values:
                    if isinstance(value, ast.BoolOp):
                        edits += wrap(value)
                add(node, "and-or", f"{TEXT[old]} -> {TEXT[new]}", src.line_of(tokens[0][0]), edits,
                    lambda n, p, new=new: setattr(n, "op", new()))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            start, end = src.span(node)
            inner = src.span(node.operand)
            add(node, "not-dropped", "not x -> x", src.line_of(start),
                [(start, end, "(" + src.text[inner[0]:inner[1]] + ")")],
                lambda n, p: _replace(p, n, n.operand))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITHMETIC_TO:
            left, right = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.target, node.value)
            strings = (ast.JoinedStr,)
            if any(isinstance(x, strings) or (isinstance(x, ast.Constant) and isinstance(x.value, (str, bytes)))
                   for x in (left, right)):
                continue  # string formatting and concatenation: a TypeError, not a plausible bug
            old, new = type(node.op), ARITHMETIC_TO[type(node.op)]
            text = TEXT[old] + ("=" if isinstance(node, ast.AugAssign) else "")
            where = _token(src, src.span(left)[1], src.span(right)[0], text)
            if where:
                edits = [(*where, TEXT[new] + text[len(TEXT[old]):])]
                if isinstance(node, ast.BinOp):  # ** and the bit operators bind unlike their swaps
                    edits += wrap(node)
                    for operand in (node.left, node.right):
                        if not isinstance(operand, (ast.Name, ast.Constant, ast.Attribute, ast.Call, ast.Subscript)):
                            edits += wrap(operand)
                add(node, "arithmetic", f"{text} -> {TEXT[new] + text[len(TEXT[old]):]}", src.line_of(where[0]), edits,
                    lambda n, p, new=new: setattr(n, "op", new()))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            start, end = src.span(node)
            value = node.value + 1  # one mutant a constant (-1 is -(1): -2)
            add(node, "int+1", f"{node.value} -> {value}", src.line_of(start), [(start, end, str(value))],
                lambda n, p, value=value: setattr(n, "value", value))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            start, end = src.span(node.value)
            add(node, "return-none", "return x -> return None", node.lineno, [(start, end, "None")],
                lambda n, p: setattr(n, "value", ast.Constant(value=None)))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            start, end = src.span(node)
            add(node, "call-dropped", "f(...) -> pass", node.lineno, [(start, end, "pass")],
                lambda n, p: _replace(p, n, ast.Pass()))
        elif isinstance(node, ast.Slice):
            for field in ("lower", "upper"):
                bound = getattr(node, field)
                if bound is None or isinstance(bound, ast.Constant):
                    continue  # constant bounds: the int+1 mutants already
                start, end = src.span(bound)
                for sign, kind, op in (("+", "slice+1", ast.Add), ("-", "slice-1", ast.Sub)):
                    add(bound, kind, f"{field} bound {sign} 1", src.line_of(start),
                        [(start, end, f"({src.text[start:end]}) {sign} 1")],
                        lambda n, p, op=op: _replace(p, n, ast.BinOp(left=n, op=op(), right=ast.Constant(value=1))))
    return found


def _apply(text: str, edits: list) -> str:
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def mutated_text(file_text: str, mutant: dict):
    """The mutated file, or None where the edits do not make exactly the mutation (checked
    against the tree changed directly) or the result does not compile."""
    new_text = _apply(file_text, mutant["edits"])
    try:
        got = ast.parse(new_text)
        compile(new_text, mutant["file"], "exec")
    except (SyntaxError, ValueError):
        return None
    expected = ast.parse(file_text)
    nodes = list(ast.walk(expected))
    parents = {child: node for node in nodes for child in ast.iter_child_nodes(node)}
    node = nodes[mutant["node"]]
    mutant["change"](node, parents.get(node))
    if ast.dump(got) != ast.dump(expected):
        return None
    return new_text


def changed_lines(rev, files) -> dict:
    """{file: set of line numbers} added or changed in the working tree since rev (git diff -U0).
    A module that moved into core/ since rev is compared with its old top-level self, so that
    only its changed lines count."""
    at_rev = set(_git("ls-tree", "-r", "--name-only", rev).splitlines())
    lines = {}
    for f in files:
        before = f if f in at_rev else os.path.basename(f) if os.path.basename(f) in at_rev else None
        with tempfile.NamedTemporaryFile("w", suffix=".py") as old:
            if before is not None:
                old.write(_git("show", f"{rev}:{before}") + "\n")
                old.flush()
            diff = subprocess.run(["git", "diff", "--no-index", "-U0", "--no-color", "--no-ext-diff", old.name,
                                   os.path.join(ROOT, f)], capture_output=True, text=True).stdout
        for new_lines in lines_of_diff(diff).values():
            lines[f] = new_lines
    return lines


def lines_of_diff(diff: str) -> dict:
    """{file: the new side's line numbers} of a git diff -U0."""
    lines, current = {}, None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else None
        elif line.startswith("@@") and current:
            m = re.match(r"@@ -\S+ \+(\d+)(?:,(\d+))? @@", line)
            first, count = int(m.group(1)), int(m.group(2) if m.group(2) is not None else 1)
            lines.setdefault(current, set()).update(range(first, first + count))
    return lines


CODE_FOLDERS = ("", "core")  # the top level and the package; the tests are not mutated


def code_files(root: str) -> list:
    """The code mutated: the *.py files of the top level and of core/, as paths relative to root."""
    return sorted(os.path.join(folder, f) for folder in CODE_FOLDERS if os.path.isdir(os.path.join(root, folder))
                  for f in os.listdir(os.path.join(root, folder))
                  if f.endswith(".py") and os.path.isfile(os.path.join(root, folder, f)))


def _stable_id(file: str, lines: list, mutant: dict, index: int) -> str:
    """file:hash of the line's text[#n for its n-th copy in the file]:kind:index on the line;
    the same after lines above it are added or removed."""
    text = lines[mutant["line"] - 1].strip() if mutant["line"] <= len(lines) else ""
    copy = sum(1 for line in lines[:mutant["line"] - 1] if line.strip() == text)
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{file}:{digest}{f'#{copy}' if copy else ''}:{mutant['kind']}:{index}"


def candidates(root: str, only_lines=None) -> list:
    """Every mutant of the code files under root (of the lines in only_lines {file: lines}
    where given), in a fixed order, each with its stable id and its line's text."""
    out = []
    for file in code_files(root):
        if only_lines is not None and file not in only_lines:
            continue
        text = open(os.path.join(root, file), encoding="utf-8").read()
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        src = Source(text)
        lines = text.splitlines()
        found = [m for m in _mutations(src, tree) if only_lines is None or m["line"] in only_lines[file]]
        found.sort(key=lambda m: (m["line"], KINDS.index(m["kind"]), min(e[0] for e in m["edits"])))
        seen = {}
        for m in found:
            n = seen.get((m["line"], m["kind"]), 0)
            seen[(m["line"], m["kind"])] = n + 1
            m.update(file=file, id=_stable_id(file, lines, m, n), original=lines[m["line"] - 1])
            out.append(m)
    out.sort(key=lambda m: (m["file"], m["line"], KINDS.index(m["kind"]), m["id"]))
    return out


def draw(mutants: list, n: int, seed: int, root: str) -> list:
    """n of the mutants that compile, drawn at random with seed: the list in a random order (a
    uniform draw among those that compile), the first n that compile taken."""
    order = list(mutants)
    random.Random(seed).shuffle(order)
    texts, chosen = {}, []
    for m in order:
        if len(chosen) == n:
            break
        if m["file"] not in texts:
            texts[m["file"]] = open(os.path.join(root, m["file"]), encoding="utf-8").read()
        new_text = mutated_text(texts[m["file"]], m)
        if new_text is None:
            continue
        src, new = Source(texts[m["file"]]), new_text
        first = min(src.line_of(e[0]) for e in m["edits"])
        last = max(src.line_of(max(e[1] - 1, e[0])) for e in m["edits"])
        head, tail = src.starts[first - 1], len(src.text) - src.starts[min(last, len(src.lines))]
        m["original"] = src.text[head:len(src.text) - tail].rstrip("\n")
        m["mutated"] = new[head:len(new) - tail].rstrip("\n")
        chosen.append(m)
    return chosen


# ---------------------------------------------------------------------------------------------
# The coverage map: which tests reach each line

def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def digest_of(root: str) -> str:
    """What the map and the results depend on: every *.py file and pytest.ini in the snapshot."""
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if (f.endswith(".py") or f == "pytest.ini") and f != "mutants.py":
                path = os.path.join(folder, f)
                h.update(os.path.relpath(path, root).encode() + b"\0" + open(path, "rb").read() + b"\0")
    return h.hexdigest()[:16]


def _ensure_subprocess_measurement() -> None:
    """Processes started by the tests measure themselves where COVERAGE_PROCESS_START is set:
    coverage (7.10 on) installs a .pth file that calls coverage.process_startup(); with an
    older one, this writes such a file into the virtual environment."""
    import site
    import sysconfig
    places = {sysconfig.get_paths()["purelib"], *getattr(site, "getsitepackages", lambda: [])()}
    for place in places:
        for pth in glob.glob(os.path.join(place, "*.pth")):
            if "process_startup" in open(pth, errors="replace").read():
                return
    target = sysconfig.get_paths()["purelib"]
    with open(os.path.join(target, "mutants_coverage.pth"), "w") as f:
        f.write('import os; exec("import coverage; coverage.process_startup()") '
                'if os.environ.get("COVERAGE_PROCESS_START") else None\n')
    print(f"wrote {target}/mutants_coverage.pth (coverage of the processes the tests start)")


def build_coverage_map(snapshot: str, work: str, selection=("tests",)) -> dict:
    """Run the whole suite once under coverage on a copy of snapshot, with one context per test
    (tests/conftest.py switches it when MUTANTS_COVERAGE is set; the processes a test starts
    inherit it through MUTANTS_TEST_ID), and read which tests reached each line."""
    import coverage
    _ensure_subprocess_measurement()
    repo = os.path.join(work, "repo")
    shutil.copytree(snapshot, repo)
    data_dir, fixtures = os.path.join(work, "data"), os.path.join(work, "fixtures")
    os.makedirs(data_dir)
    os.makedirs(fixtures)
    rc = os.path.join(work, "coveragerc")
    patch = "patch = _exit\n" if hasattr(coverage.config.CoverageConfig(), "patch") else ""
    with open(rc, "w") as f:
        f.write(f"[run]\nparallel = True\ndata_file = {data_dir}/.coverage\ncontext = ${{MUTANTS_TEST_ID}}\n"
                f"include =\n    {repo}/*.py\n    {repo}/core/*.py\nomit =\n    {repo}/tests/*\n    {repo}/.venv/*\n{patch}"
                "disable_warnings =\n    no-data-collected\n    module-not-measured\n    module-not-imported\n"
                "    couldnt-parse\n    no-ctracer\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MUTANTS_TEST_ID", "COVERAGE_PROCESS_CONFIG")}
    env.update(COVERAGE_PROCESS_START=rc, MUTANTS_COVERAGE=fixtures)
    os.makedirs(MUTANTS_DIR, exist_ok=True)  # a fresh clone has none
    log = os.path.join(MUTANTS_DIR, "coverage-run.log")
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "--basetemp", os.path.join(work, "pytest-files"), *selection], cwd=repo, env=env,
                              stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    tail = open(log, errors="replace").read()[-1500:]
    print(tail.rstrip().splitlines()[-1] if tail.strip() else "(no output)")
    if code != 0:
        print(f"warning: the suite did not pass under coverage (exit {code}; {log}): the map is built "
              "from what ran, and mutants of lines only failing tests reach are judged by them")
    cov = coverage.Coverage(config_file=rc)
    cov.combine(strict=False)
    data = cov.get_data()
    users = {}  # shared fixture context -> the tests that use the fixture
    for path in glob.glob(os.path.join(fixtures, "fixtures-*.jsonl")):  # tests/conftest.py: [test, its fixtures]
        for line in open(path):
            test, keys = json.loads(line)
            for key in keys:
                users.setdefault(key, set()).add(test)
    tests, sets, files = {}, {}, {}
    for measured in data.measured_files():
        rel = os.path.relpath(measured, repo)
        if os.path.dirname(rel) not in CODE_FOLDERS or not rel.endswith(".py"):
            continue
        for line, contexts in (data.contexts_by_lineno(measured) or {}).items():
            reached = set()
            for context in contexts:
                for part in context.split("|"):
                    if part.startswith("fixture "):
                        reached |= users.get(part, set())
                    elif "::" in part:
                        reached.add(part)
            if reached:
                ids = tuple(sorted(tests.setdefault(t, len(tests)) for t in reached))
                files.setdefault(rel, {})[str(line)] = sets.setdefault(ids, len(sets))
    return {"tests": sorted(tests, key=tests.get), "sets": [list(s) for s in sorted(sets, key=sets.get)],
            "files": files, "suite_exit": code, "seconds": round(seconds)}


def coverage_map(snapshot: str, digest: str, rebuild: bool, build: bool = True):
    """The map of these files (digest): the one kept in .mutants/, or a new one (None where
    build is False)."""
    path = os.path.join(MUTANTS_DIR, "coverage-map.json")
    if not rebuild and os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("digest") == digest:
            print(f"coverage map: {path} (built in {cached['seconds']} s for these files)")
            return cached
    if not build:
        print("no coverage map of these files yet: the tests of each mutant are not shown")
        return None
    print("coverage map: running the whole suite once under coverage, one context per test (the first "
          "time for these files; several times the suite's usual time: see docs/tests.md)", flush=True)
    with tempfile.TemporaryDirectory(prefix="mutants-coverage-") as work:
        built = build_coverage_map(snapshot, work)
    built["digest"] = digest
    _write_json(path, built)
    print(f"coverage map: {len(built['tests'])} tests over {sum(len(v) for v in built['files'].values())} lines "
          f"in {built['seconds']} s, kept in {path}", flush=True)
    return built


def tests_reaching(cmap: dict, mutant: dict) -> list:
    """The node ids of the tests that reach the mutant's line or its statement's first line;
    [] where the map has none, or where the line runs at import (a module's constants, default
    values: any test may read them, and the map holds only the test that first imported the
    module): then the whole suite runs."""
    if not mutant["call_time"]:
        return []
    lines = cmap["files"].get(mutant["file"], {})
    found = set()
    for line in {mutant["line"], mutant["stmt_line"]}:
        if str(line) in lines:
            found.update(cmap["sets"][lines[str(line)]])
    return [cmap["tests"][i] for i in sorted(found)]


# ---------------------------------------------------------------------------------------------
# Running the mutants

def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def unmount_under(folder: str) -> None:
    """Unmount every file system mounted under folder (lazily: it may still be busy)."""
    try:
        with open("/proc/mounts") as f:
            points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    except OSError:  # not Linux: nothing mounts there
        return
    for point in sorted((p for p in points if p.startswith(folder.rstrip("/") + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def run_mutant(snapshot: str, mutant: dict, new_text: str, tests: list, timeout: float) -> dict:
    """caught (a test failed: exit 1), survived (exit 0), timeout, or error (any other exit)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutant-") as dest:
        repo = os.path.join(dest, "repo")
        shutil.copytree(snapshot, repo)
        with open(os.path.join(repo, mutant["file"]), "w", encoding="utf-8") as f:
            f.write(new_text)
        files = {t.split("::")[0] for t in tests}
        # one file or a few tests: no xdist; the whole suite (no test in the map) in parallel as usual
        spread = [] if not tests or (len(tests) > 5 and len(files) > 1) else ["-n0"]
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *spread,
                   "--basetemp", os.path.join(dest, "pytest-files"), *(tests or ["tests"])]
        env = _plain_env()
        log = os.path.join(dest, "log")
        with open(log, "w") as out:
            proc = subprocess.Popen(command, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
        output = open(log, errors="replace").read()
        unmount_under(dest)  # a test killed inside its small tmpfs (the full-disk tests) leaves it mounted
    if code == 2 and not spread and re.search(r"stopping after \d+ failures", output) \
            and re.search(r"\b[1-9]\d* (failed|errors?)\b", "\n".join(output.strip().splitlines()[-3:])):
        code = 1  # xdist with -x ends a session where a test failed (or its fixture) as interrupted: exit 2
    status = {0: "survived", 1: "caught", None: "timeout"}.get(code, "error")
    whole = "tests (the whole suite: " + ("the map has no test for this line)" if mutant["call_time"] else
                                          "a line that runs at import)")
    result = dict(status=status, exit=code, seconds=round(time.monotonic() - started, 1), tests=tests or [whole])
    if status != "survived":
        lines = [l for l in output.splitlines() if l.startswith(("FAILED", "ERROR"))]
        result["output"] = "\n".join(lines[:3]) if status == "caught" and lines else output[-3000:]
    return result


def _print_mutant(m: dict, r: dict = None) -> None:
    print(f"  {m['file']}:{m['line']}  {m['kind']} ({m['what']})  [{m['id']}]")
    for label, text in (("-", m["original"]), ("+", m["mutated"])):
        for line in text.splitlines():
            print(f"    {label} {line}")
    if r:
        tests = r["tests"]
        print(f"    reached by {len(tests)} test(s): " + ", ".join(tests[:6]) + (" ..." if len(tests) > 6 else ""))
        if r["status"] in ("error", "timeout"):
            print("    " + (r.get("output") or "").strip().replace("\n", "\n    ")[-1500:])


def mechanical_parser():
    import argparse
    parser = argparse.ArgumentParser(prog="tests/mutants.py", description="mechanical mutants of the code")
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--since", metavar="REV", help="the lines of the *.py files (top level and core/) added or changed since REV")
    scope.add_argument("--all", action="store_true", help="every line of the *.py files of the top level and core/")
    parser.add_argument("--sample", type=int, default=60, metavar="N", help="how many mutants to draw (default 60)")
    parser.add_argument("--seed-commit", default="HEAD", metavar="REV",
                        help="the commit whose id seeds the draw (default HEAD): an earlier HEAD draws its sample again")
    parser.add_argument("--list", action="store_true", help="print the sample and the tests of each, run nothing")
    parser.add_argument("--rebuild-map", action="store_true", help="build the coverage map again")
    parser.add_argument("--fresh", action="store_true", help="run every mutant again, not only those not done")
    parser.add_argument("--timeout", type=float, default=SAFETY_TIMEOUT, metavar="SECONDS",
                        help=f"a safety net: a mutant whose tests take longer is reported as timeout (default {SAFETY_TIMEOUT})")
    return parser


def mechanical(argv) -> int:
    args = mechanical_parser().parse_args(argv)

    seed_sha = _git("rev-parse", args.seed_commit)
    seed = int(seed_sha[:16], 16)
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "*.py")
    if dirty:
        print("note: files differ from HEAD; their working-tree text is what is mutated and tested:\n  "
              + dirty.replace("\n", "\n  "))
    started = time.monotonic()
    snapshot_dir = tempfile.TemporaryDirectory(prefix="mutants-snapshot-")
    snapshot = snapshot_dir.name
    try:
        copy_of_repository(snapshot)
        files = code_files(snapshot)
        if args.all:
            only, scope_name = None, "all"
        else:
            rev = _git("rev-parse", args.since)
            only, scope_name = changed_lines(rev, files), f"since-{rev[:12]}"
        everything = candidates(snapshot, only)
        sample = draw(everything, args.sample, seed, snapshot)
        counts = {k: sum(1 for m in everything if m["kind"] == k) for k in KINDS}
        print(f"{len(everything)} candidate mutants on {sum(len(v) for v in only.values()) if only else 'all'} lines "
              f"of {len(only) if only is not None else len(files)} files ("
              + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ")")
        print(f"seed {seed} (the first 16 hex digits of {args.seed_commit} = {seed_sha[:12]}); "
              f"{len(sample)} drawn" + (f" (fewer than {args.sample}: that is all of them)" if len(sample) < args.sample else ""))
        digest = digest_of(snapshot)
        cmap = coverage_map(snapshot, digest, args.rebuild_map, build=not args.list)
        # one report per sample and per state of the files: a rerun after tests were added keeps the first
        report_path = os.path.join(MUTANTS_DIR, f"report-{seed_sha[:12]}-{scope_name}-{args.sample}-{digest[:8]}.json")
        report = {"seed_commit": seed_sha, "seed": seed, "scope": scope_name, "sample_size": args.sample,
                  "digest": digest, "candidates": len(everything), "sample": [m["id"] for m in sample], "results": {}}
        if os.path.exists(report_path) and not args.fresh:
            earlier = json.load(open(report_path))
            if all(earlier.get(k) == report[k] for k in ("digest", "sample", "seed")):
                report["results"] = {k: v for k, v in earlier["results"].items() if v["status"] not in ("error", "timeout")}
                if report["results"]:
                    print(f"{len(report['results'])} mutants done before, taken from {report_path} (--fresh runs them again)")
        for i, m in enumerate(sample, 1):
            tests = tests_reaching(cmap, m) if cmap else []
            if args.list:
                print(f"[{i}/{len(sample)}] {len(tests) or 'all'} tests")
                _print_mutant(m)
                continue
            if m["id"] in MECHANICAL_EQUIVALENT:
                report["results"][m["id"]] = dict(status="equivalent", reason=MECHANICAL_EQUIVALENT[m["id"]], tests=tests)
            elif m["id"] not in report["results"]:
                text = _apply(open(os.path.join(snapshot, m["file"]), encoding="utf-8").read(), m["edits"])
                report["results"][m["id"]] = run_mutant(snapshot, m, text, tests, args.timeout)
                report["results"][m["id"]].update(
                    {k: m[k] for k in ("file", "line", "kind", "what", "original", "mutated")})
                _write_json(report_path, report)
            r = report["results"][m["id"]]
            print(f"[{i}/{len(sample)}] {r['status']:10s} {m['file']}:{m['line']} {m['kind']} ({m['what']}) "
                  f"on {len(tests) or 'all'} tests" + (f", {r['seconds']} s" if "seconds" in r else ""), flush=True)
        if args.list:
            return 0
        _write_json(report_path, report)
        results = [(m, report["results"][m["id"]]) for m in sample]
        by = {s: [(m, r) for m, r in results if r["status"] == s]
              for s in ("caught", "survived", "timeout", "error", "equivalent")}
        for status in ("survived", "timeout", "error"):
            if by[status]:
                print(f"\n{status}:")
                for m, r in by[status]:
                    _print_mutant(m, r)
        if by["equivalent"]:
            print("\nargued equivalent (MECHANICAL_EQUIVALENT in tests/mutants.py), not counted:")
            for m, r in by["equivalent"]:
                print(f"  {m['file']}:{m['line']} {m['kind']} [{m['id']}]: {r['reason']}")
        run = len(by["caught"]) + len(by["survived"]) + len(by["timeout"]) + len(by["error"])
        print(f"\nscore: {len(by['caught'])} of {run} mutants caught ({len(by['survived'])} survived, "
              f"{len(by['timeout'])} timed out, {len(by['error'])} errors; {len(by['equivalent'])} argued "
              f"equivalent, not counted); seed {seed}; {round(time.monotonic() - started)} s; report in {report_path}")
        return 0 if run == len(by["caught"]) else 1
    finally:
        snapshot_dir.cleanup()


def main(argv) -> int:
    if any(a.startswith("-") and a != "--before" for a in argv):
        return mechanical(argv)  # --since, --all, ...: mutants generated from the code
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
