"""Writing files so that an interruption or a second command never leaves a mix.

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
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` for writing: a second command that tries gets a one-line error.

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
    handle = _acquire(Path(folder))
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


def _acquire(folder: Path) -> int:
    path = folder / LOCK_NAME
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(handle):
            holder = os.read(handle, 100).decode(errors="replace").strip()
            os.close(handle)
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


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
