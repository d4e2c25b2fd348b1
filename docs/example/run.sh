#!/usr/bin/env bash
# The worked study of docs/example.md: all five ablations, then the consolidated
# model from their results, on the real Fashion-MNIST at one reduced scale.
# Every figure in docs/example/ comes from this file. Stopped anywhere? Run it
# again: each script skips the runs already recorded and resumes the rest.
# Flags given to it go to every training script after the scale's, and win
# (the tests shrink the study with them: tests/test_example.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
out=${OUT:-docs/example}
# The scale, in one place: 67 px, 2,000 training / 500 validation / 2,000 test
# images, 8 epochs, 3 seeds; only each run's best epoch is kept (git-ignored).
scale=(--dataset fashion-mnist --image-size 67 --train-size 2000 --val-size 500
       --test-size 2000 --epochs 8 --seeds 3 --save best --out "$out")
"$py" main_learning_rate.py "${scale[@]}" "$@"
"$py" main_optimizer.py "${scale[@]}" "$@"
"$py" main_weight_regularization.py "${scale[@]}" "$@"
"$py" main_activation.py "${scale[@]}" --tune-lr x0.3 x1 x3 "$@"
"$py" main_dropout.py "${scale[@]}" "$@"
"$py" main_consolidated.py "${scale[@]}" "$@" --from-results
"$py" main_consolidated.py "${scale[@]}" "$@" --evaluate
"$py" report.py --out "$out"
