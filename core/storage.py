"""Writing files so that nothing is lost or half-written: atomic writes under
names unique to the process, file locks, and interrupts held back while a file
is being written.

Every file this repository writes (checkpoints, run records, results, plots,
the report) goes through atomic_write: the data lands in a temporary file in the
same folder, is flushed to disk, then renamed over the target, so a reader sees
the previous complete file or the new one. A write that cannot complete (disk
full, no permission) removes its temporary file, leaves the previous file in
place and raises WriteError with one sentence naming the path and the cause.
Ctrl-C or SIGTERM arriving mid-write takes effect when the write is done. What a
writer killed mid-write leaves, remove_left_behind removes for whoever holds the
writers' claim or lock.
"""
import argparse
import contextlib
import os
import re
import signal
import threading
import uuid

try:
    import fcntl
except ImportError:  # not on Windows: locks become no-ops there
    fcntl = None

HANDLED_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s)


class WriteError(Exception):
    """A file could not be written; the message is one sentence for the user."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM; exit_code is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code_of(interrupt: KeyboardInterrupt) -> int:
    return getattr(interrupt, "exit_code", 128 + signal.SIGINT)


def _raise_interrupt(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_as_exceptions():
    """Within the block SIGINT and SIGTERM both raise Interrupted (SIGTERM's default
    would end the process on the spot, leaving temporary files and no message)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupt) for s in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


_deferred = []  # signals caught while some block holds interrupts back; [] when none does
_depth = [0]


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back SIGINT and SIGTERM until the block ends, then raise Interrupted:
    a checkpoint or results file being written is finished first, never cut. Nested
    blocks hold them until the outermost ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth[0] == 0:
        _deferred.clear()
        previous = {s: signal.signal(s, lambda signum, frame: _deferred.append(signum)) for s in HANDLED_SIGNALS}
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if _depth[0] == 0:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if _depth[0] == 0 and _deferred:
        raise Interrupted(_deferred[0])


def temporary_name(path: str) -> str:
    """A name beside path that no other process or thread will choose."""
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


TEMPORARY_NAME = re.compile(r"\.(?P<base>.+)\.[0-9]+\.[0-9a-f]{8}\.tmp")  # temporary_name's names


def remove_left_behind(paths) -> list:
    """Remove the temporary files that writes to paths left beside them: a writer killed inside
    its write (SIGKILL, a power cut) leaves one, as does one whose folder turned unwritable before
    it could remove it. Returns the files removed; one that cannot be removed stays.

    Only while holding what every writer of paths holds while it writes (a run's claim, an
    experiment's lock): then none of these files is a live writer's, whatever process id its
    name holds (ids are reused, and mean nothing to another machine sharing the folder)."""
    removed, wanted = [], {}
    for path in paths:
        folder, base = os.path.split(path)
        wanted.setdefault(folder, set()).add(base)
    for folder, bases in wanted.items():
        try:
            names = os.listdir(folder or ".")
        except OSError:  # no folder yet: nothing left in it
            continue
        for name in sorted(names):
            match = TEMPORARY_NAME.fullmatch(name)
            if match and match["base"] in bases:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
                    removed.append(os.path.join(folder, name))
    return removed


def describe(err: OSError) -> str:
    return err.strerror or type(err).__name__


def ensure_folder(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise WriteError(f"could not create the folder {folder} ({describe(err)})") from None


class _Watched:
    """A file whose write errors are kept: torch.save's C++ writer turns them into a
    RuntimeError ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write(path: str, write, binary: bool = True) -> None:
    """write(file object) fills a temporary file, which then replaces path."""
    ensure_folder(os.path.dirname(path) or ".")
    tmp = temporary_name(path)
    with interrupts_deferred():
        watched = None
        try:
            with open(tmp, "wb" if binary else "w") as f:
                watched = _Watched(f)
                write(watched)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename: a power cut leaves the old file or the new
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            cause = err if isinstance(err, OSError) else watched.error if watched else None
            if cause is not None:
                raise WriteError(f"could not write {path} ({describe(cause)}); the previous file, if any, "
                                 f"is unchanged") from None
            raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def out_folder(text: str) -> str:
    """--out as argparse reads it: an empty path would write into the current folder unasked."""
    if not text:
        raise argparse.ArgumentTypeError("the empty string names no folder; give one, e.g. --out . for the "
                                         "current folder")
    return text


def check_writable(folder: str) -> None:
    """Raise WriteError unless files can be created in folder, or in the folders that would
    be made for it. Leaves nothing behind: the test file is removed, no folder is made."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WriteError(f"{existing} is a file, not a folder, so {folder} cannot be made")
    probe = temporary_name(os.path.join(existing, "write-probe"))
    try:
        with open(probe, "w") as f:
            f.write("ok")
    except OSError as err:
        raise WriteError(f"cannot write into {existing} ({describe(err)})") from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)


def _lock(path: str, wait: bool):
    """An open file holding an exclusive flock on path, or None if another process holds it
    (wait=False). flock locks end with the process however it ends, so a killed process
    leaves no stale lock; the file is removed on release, and a lock taken on a file that
    was removed meanwhile is retried on the new one."""
    ensure_folder(os.path.dirname(path) or ".")
    while True:
        f = open(path, "a")
        if not fcntl:
            return f
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            f.close()
            return None
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()  # its holder removed it while we waited: lock the current file instead


def _unlock(f, path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)  # still holding the lock: nobody can hold this file now
    f.close()


@contextlib.contextmanager
def locked(path: str):
    """Hold an exclusive lock on path for the block, waiting for it."""
    f = _lock(path, wait=True)
    try:
        yield
    finally:
        _unlock(f, path)


class Claim:
    """A non-blocking exclusive lock: whoever holds it trains the run; others leave it alone."""

    def __init__(self, path: str):
        self.path = path
        self.file = None

    def acquire(self) -> bool:
        self.file = _lock(self.path, wait=False)
        return self.file is not None

    def release(self) -> None:
        if self.file:
            _unlock(self.file, self.path)
            self.file = None


class Presence:
    """A shared lock that every process taking part in one shared task holds while it does (every
    sweep of an experiment on an --out: terminals, shards, ranks, machines sharing it); alone()
    tells, without waiting, whether no other process holds it. The operating system releases it
    however the process ends. Its file stays: removing it would let a process that opened it
    just before lock a file that nobody else sees."""

    def __init__(self, path: str):
        self.path = path
        self.file = None

    def __enter__(self):
        ensure_folder(os.path.dirname(self.path) or ".")
        self.file = open(self.path, "a")
        if fcntl:
            fcntl.flock(self.file, fcntl.LOCK_SH)  # waits only while a process is alone() (a moment)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Take part no more (before the end of the with block, where the task ends sooner)."""
        if self.file:
            self.file.close()
            self.file = None

    @contextlib.contextmanager
    def alone(self):
        """Yields whether no other process takes part now; while True, none can join (its
        __enter__ waits) until the block ends. Call it once released, as flock's change
        from shared to exclusive may give up the shared lock."""
        ensure_folder(os.path.dirname(self.path) or ".")
        with open(self.path, "a") as f:
            if not fcntl:
                yield True
                return
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
