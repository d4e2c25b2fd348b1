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


def shorten(text: str, limit: int) -> str:
    """text if it fits in limit characters, else cut at its last sentence end (in the second
    half of the limit) or word boundary before the limit, with '...' added; never mid-word
    unless a single word is longer than the limit."""
    if len(text) <= limit:
        return text
    body = text[:max(limit - 3, 1)]
    sentence = max(body.rfind(mark) for mark in (". ", "! ", "? ")) + 1
    if sentence >= len(body) // 2:
        cut = sentence
    elif text[len(body)].isspace():
        cut = len(body)  # the cut falls between two words already
    else:
        cut = body.rfind(" ")
    return (body[:cut] if cut > 0 else body).rstrip(" \t,;:.!?") + "..."


def one_line_interrupts() -> None:
    """Ctrl-C before a script's main() runs (while torch is being imported) prints one line,
    not a traceback; Python still ends with the status of SIGINT (130 in a shell). The scripts
    call it first, before any import that takes time; calling it again changes nothing."""
    if getattr(sys.excepthook, "one_line_interrupts", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            print("\ninterrupted before any work began; nothing was written", file=sys.stderr)
        else:
            previous(kind, value, tb)

    hook.one_line_interrupts = True
    sys.excepthook = hook
