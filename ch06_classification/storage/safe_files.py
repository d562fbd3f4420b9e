"""Writing files so that an interruption or a second command never leaves a mix, and
reading them so that a damaged or odd one is one line naming it.

From the smallest tool up:

* :func:`atomic_output` writes one file: it appears complete under its name, or not at all.
* :func:`replace_together` writes a set of files that belong together (the split CSVs and
  their report; a run's checkpoint, metrics and plots) into a staging folder, then moves
  them in. Renaming the staging folder to ``.commit-…`` is the moment the new set is
  decided; if the moves after it are interrupted, the next command that touches the folder
  finishes them. Either way a reader finds the old set or the new one, never a mix.
* :func:`folder_lock` lets one command at a time write into a folder, and on taking the
  folder it removes what interrupted writers left behind (half-written ``.part`` files,
  unfinished staging folders) and finishes an interrupted commit. :func:`claim_folder`
  holds it for a whole command, from before its work starts.
* :func:`ensure_writable_folder` finds a read-only disk, a file where a folder should be,
  or too little free space before the long work, not after it.

Reading: :func:`file_exists` refuses a folder, a FIFO or a device where a file should be
(without opening it: a FIFO would wait for a writer forever), and :func:`read_json` reads
every JSON file gpt-spam keeps, its problems one :class:`FileReadError` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from gpt.errors import UserFacingError, describe_os_error

LOCK_NAME = ".gpt-spam.lock"
_STAGING_PREFIX = ".staging-"  # being written: discarded if its writer is gone
_COMMIT_PREFIX = ".commit-"  # complete: moved into place by whoever finds it
_COMMIT_ALL_PREFIX = ".commit-all-"  # complete, and replaces everything in the folder
_PART_SUFFIX = ".part"  # a file being written by atomic_output


class FolderBusyError(UserFacingError):
    """Another command is writing into the folder right now."""


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` only if the block succeeds.

    The temporary file lives in the same folder so that ``os.replace`` is a rename, which
    is atomic: readers see either the old file or the complete new one. On any error
    (or interrupt) the temporary file is removed and ``path`` is left as it was; after a
    kill, which runs no cleanup, :func:`folder_lock` removes it the next time.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=_PART_SUFFIX
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates owner-only files; data files are ordinary, world-readable ones.
        temporary_path.chmod(0o644)
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


@contextmanager
def replace_together(folder: str | Path, replace_all: bool = False) -> Iterator[Path]:
    """Yield a staging folder; what the block writes there replaces its namesakes in ``folder``.

    Nothing in ``folder`` changes unless the block succeeds. ``replace_all=True`` also
    removes everything else in ``folder`` (a retrained run's old evaluation and plots).
    Holds :func:`folder_lock` on ``folder`` throughout.
    """
    folder = Path(folder)
    with folder_lock(folder):
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=folder))
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for path in staging.iterdir():
            path.chmod(0o644)  # see atomic_output
        # The one atomic step: from here on the new set is decided and will be completed.
        prefix = _COMMIT_ALL_PREFIX if replace_all else _COMMIT_PREFIX
        commit = staging.with_name(prefix + staging.name.removeprefix(_STAGING_PREFIX))
        os.replace(staging, commit)
        _finish_commit(commit)


@contextmanager
def folder_lock(folder: str | Path, wait: float = 0.0) -> Iterator[None]:
    """Hold ``folder`` for writing: a second command that tries gets a one-line error
    (after waiting up to ``wait`` seconds for the first to finish).

    The lock is an advisory ``flock`` on ``folder/.gpt-spam.lock``, which the operating
    system releases when the process ends however it ends, so a killed command never
    leaves the folder locked. Taking the lock tidies the folder (see the module's docstring).
    Re-entrant within one process.
    """
    key = Path(folder).resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    handle = _acquire(Path(folder), wait)
    _held[key] = 1
    try:
        tidy(folder)
        yield
    finally:
        del _held[key]
        _release(Path(folder), handle)


@contextmanager
def claim_folder(
    folder: str | Path, needed_bytes: int = 0, made_here: bool = False
) -> Iterator[Path]:
    """Hold ``folder`` for a whole command: created if needed, proven writable (with
    ``needed_bytes`` free, :func:`ensure_writable_folder`) and locked (:func:`folder_lock`)
    before any work, so that a second command wanting it is refused at its start, not
    silently overtaken at its end. A folder made here (or by the caller: ``made_here``) and
    left empty, because the work failed, is removed again.
    """
    folder = Path(folder)
    made_here = made_here or not folder.exists()
    try:
        ensure_writable_folder(folder, needed_bytes)
        with folder_lock(folder):
            yield folder
    finally:
        if made_here and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def settle(folder: str | Path) -> bool:
    """Finish or discard interrupted writes in ``folder`` before reading it, if any.

    Does nothing when nobody left anything behind, when a command is writing there now,
    or when the folder cannot be written (then nobody can have left anything half-done).
    Returns whether it tidied something.
    """
    folder = Path(folder)
    if not any(_leftovers(folder)):
        return False
    with suppress(OSError, FolderBusyError), folder_lock(folder):
        return True  # taking the lock tidied
    return False


def tidy(folder: str | Path) -> None:
    """Remove interrupted writes from ``folder`` and finish interrupted commits.

    Only safe while holding :func:`folder_lock`: every writer holds it, so whatever is
    found was left by a command that is gone.
    """
    for path in _leftovers(Path(folder)):
        if path.name.startswith(_COMMIT_PREFIX):
            _finish_commit(path)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def scratch_folder(folder: str | Path) -> tempfile.TemporaryDirectory:
    """A temporary folder inside ``folder``, removed on exit, and by :func:`tidy` after a kill."""
    return tempfile.TemporaryDirectory(dir=folder, prefix=_STAGING_PREFIX)


def ensure_writable_folder(folder: str | Path, needed_bytes: int = 0) -> Path:
    """Create ``folder`` if needed and prove a file can be written there, before long work.

    Raises a one-line :class:`UserFacingError` for a file in the way, a read-only or full
    disk, missing permissions, or less than ``needed_bytes`` free.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"0")
            probe.flush()
        free = shutil.disk_usage(folder).free
    except OSError as error:
        raise UserFacingError(describe_os_error(error, folder)) from None
    if free < needed_bytes:
        raise UserFacingError(
            f"{folder}: only {free / 1e6:,.0f} MB free, and {needed_bytes / 1e6:,.0f} MB are "
            "needed: free some space or choose another folder"
        )
    return folder


def is_own_file(name: str) -> bool:
    """Whether ``name`` is this module's: a lock, or a write in progress or interrupted."""
    return name == LOCK_NAME or _is_write_in_progress(name)


# --- How it works -------------------------------------------------------------------------

_held: dict[Path, int] = {}  # folders this process holds, and how many times


def _is_write_in_progress(name: str) -> bool:
    return name.startswith((_STAGING_PREFIX, _COMMIT_PREFIX)) or (
        name.startswith(".") and name.endswith(_PART_SUFFIX)
    )


def _leftovers(folder: Path) -> Iterable[Path]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / name for name in names if _is_write_in_progress(name)]


def _finish_commit(commit: Path) -> None:
    """Move a complete set into place; safe to run again after an interruption."""
    folder = commit.parent
    if commit.name.startswith(_COMMIT_ALL_PREFIX):
        keep = {commit.name, LOCK_NAME, *os.listdir(commit)}
        for name in os.listdir(folder):
            if name not in keep:
                old = folder / name
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
    for name in os.listdir(commit):
        os.replace(commit / name, folder / name)
    commit.rmdir()


def _acquire(folder: Path, wait: float = 0.0) -> int:
    path = folder / LOCK_NAME
    deadline = time.monotonic() + wait
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(handle):
            holder = os.read(handle, 100).decode(errors="replace").strip()
            os.close(handle)
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise FolderBusyError(
                f"{folder} is being written by another gpt-spam command"
                f"{f' (process {holder})' if holder else ''}: wait for it to finish, "
                "or use another folder"
            )
        # The previous holder may have deleted the file between our open and our lock:
        # then we hold a lock on a file nobody else can see, so try again.
        try:
            same = os.path.samestat(os.fstat(handle), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(handle, 0)
            os.write(handle, str(os.getpid()).encode())
            return handle
        os.close(handle)


def _release(folder: Path, handle: int) -> None:
    # Deleted while still locked, so that no other command can lock the old file after us.
    with suppress(OSError):  # e.g. Windows, which cannot delete an open file: it stays
        (folder / LOCK_NAME).unlink(missing_ok=True)
    os.close(handle)


try:
    import fcntl

    def _try_lock(handle: int) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

except ImportError:  # Windows
    import msvcrt

    def _try_lock(handle: int) -> bool:
        try:
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True


def write_json(path: str | Path, values: Any) -> Path:
    """Write ``values`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")
    return path


# --- Reading ------------------------------------------------------------------------------

# Far deeper than any file gpt-spam writes (4 levels), far shallower than the nesting at
# which Python's recursion stops: in the JSON parser, or later in whatever walks the values
# (dataclasses.asdict, ==, json.dumps).
MAX_JSON_DEPTH = 100

_NOT_FILES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileReadError(UserFacingError):
    """A file that cannot be read as what it should be: not a file, unreadable, not JSON."""


def file_exists(path: str | Path) -> bool:
    """Whether a regular file is at ``path`` (following symbolic links); False if nothing is.

    Anything else there is a :class:`FileReadError` ("X is a FIFO, not a file"): told
    apart by ``os.stat``, so it is never opened (opening a FIFO waits for a writer forever,
    a device may never end).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False  # nothing there, or a link to nothing
    except OSError as error:
        raise FileReadError(describe_os_error(error, path)) from None
    if stat.S_ISREG(mode):
        return True
    kind = next((name for is_kind, name in _NOT_FILES if is_kind(mode)), "not a regular file")
    link = f" (a link to {os.path.realpath(path)})" if path.is_symlink() else ""
    raise FileReadError(f"{path} is {kind}{link}, not a file")


def parse_json(text: str | bytes) -> Any:
    """The values of a JSON text (bytes are read as UTF-8); ``ValueError`` says what is
    wrong with it: malformed, not UTF-8, or nested more than ``MAX_JSON_DEPTH`` deep."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            byte = f"byte {error.start:,} is {text[error.start]:#04x}"
            raise ValueError(f"not UTF-8 text: {byte}") from None
    too_deep = f"nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        values = json.loads(text)
    except RecursionError:  # (deeper than Python's recursion limit, ~1,000 levels)
        raise ValueError(too_deep) from None
    if _nesting(values) > MAX_JSON_DEPTH:
        raise ValueError(too_deep)
    return values


def read_json(path: str | Path) -> Any:
    """The values of the JSON file at ``path``; any problem (missing, a folder or a FIFO,
    unreadable, not UTF-8, malformed, nested too deeply) is a :class:`FileReadError`
    naming the file."""
    path = Path(path)
    if not file_exists(path):
        raise FileReadError(f"{path}: no such file")
    try:
        return parse_json(path.read_bytes())
    except OSError as error:
        raise FileReadError(describe_os_error(error, path)) from None
    except ValueError as error:
        raise FileReadError(f"{path} is not valid JSON ({error})") from None


def _nesting(values: Any) -> int:
    """How deeply lists and objects nest in ``values`` (1 for ``[1, 2]``), found without
    recursion."""
    deepest, pending = 0, [(values, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:  # deeper is too deep already: no need to look
                pending.extend((item, depth + 1) for item in value)
    return deepest
