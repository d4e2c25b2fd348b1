"""The study's machinery, one job per module. Nothing here imports a top-level file: the
scripts, sweep.py and train.py build on this package, never the other way round."""
