"""One logger for every script: progress lines on stdout from the process that
writes results (rank 0 under torchrun), problems on stderr from every process."""
import sys

_state = {"quiet": False, "prefix": ""}


def configure(quiet: bool = False, prefix: str = "") -> None:
    """quiet: this process prints no progress lines (a torchrun rank other than 0);
    prefix: put before its problem lines, e.g. "[rank 1] "."""
    _state.update(quiet=quiet, prefix=prefix)


def info(message: str) -> None:
    if not _state["quiet"]:
        print(message, flush=True)


def problem(message: str) -> None:
    print(_state["prefix"] + message, file=sys.stderr, flush=True)
