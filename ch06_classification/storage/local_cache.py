"""What gpt-spam remembers on this machine between commands, so that loading a run is fast.

A lean run stores only what fine-tuning changed (``base_weights.py``); each ``classify``
rebuilds the rest and proves it is the base training used. Done from scratch, that costs
more than the classification itself: hashing OpenAI's 498 MB file, or drawing 124 M
random numbers again and hashing them. Two things are remembered instead:

- **Digests of files**, keyed by the file's resolved path, size, modification and change
  times (``st_mtime_ns``, ``st_ctime_ns``). Writing a file changes them, so a changed file
  is hashed again; the change time cannot be set back by hand, as ``touch`` can set back
  the modification time. What they cannot see is bytes changed without a write: a failing
  disk, or a clock set back. ``--verify`` (``recompute=True``) hashes the file again.
- **Random bases**, written once as a safetensors file (named by what the run records of
  them: seed, initialisation, model shape, the SHA-256 of their tensors) with that SHA-256
  remembered as above. Later loads map the
  file into memory: nothing is drawn, hashed or copied.

Training keeps the frozen blocks' output there too (``prefix_cache.py``), within a limit
(:func:`cache_limit_bytes`).

Everything lives in one folder: ``$GPT_SPAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpt-spam``,
else ``~/.cache/gpt-spam``. It may be deleted at any time (``gpt-spam cache --clear``); a
folder that cannot be written only means that nothing is remembered.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from ch06_classification.storage.safe_files import FileReadError, read_json, write_json
from gpt.errors import UserFacingError

CACHE_DIR_ENV = "GPT_SPAM_CACHE_DIR"
LIMIT_ENV = "GPT_SPAM_CACHE_GIB"  # how much the frozen blocks' kept outputs may take
DEFAULT_LIMIT_GIB = 4
_DIGESTS = "digests.json"
_RANDOM_BASES = "random-bases"


def cache_dir() -> Path:
    """The folder of gpt-spam's cache on this machine (it may not exist yet)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpt-spam"


def cache_limit_bytes() -> int:
    """How many bytes the frozen blocks' kept outputs may take: ``$GPT_SPAM_CACHE_GIB``
    GiB, else 4 GiB (0: keep nothing)."""
    value = os.environ.get(LIMIT_ENV, "").strip()
    if not value:
        return DEFAULT_LIMIT_GIB * 1024**3
    try:
        gib = float(value)
    except ValueError:
        gib = math.nan
    if not (math.isfinite(gib) and gib >= 0):
        raise UserFacingError(
            f"{LIMIT_ENV} is {value!r}: expected how many GiB the frozen blocks' kept outputs "
            "may take, a number of at least 0 (0 turns the cache off), e.g. 4"
        )
    return int(gib * 1024**3)


def _stat_key(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def _read_digests() -> dict[str, dict]:
    try:
        values = read_json(cache_dir() / _DIGESTS)
    except FileReadError:  # none yet, or damaged: nothing is remembered (until rewritten)
        return {}
    return values if isinstance(values, dict) else {}


def remembered_digest(
    path: str | Path, kind: str, compute: Callable[[Path], str], recompute: bool = False
) -> str:
    """``compute(path)`` (a digest of kind ``kind``, e.g. ``"file_sha256"``), remembered for
    as long as the file is unchanged (same path, size, modification and change times);
    ``recompute=True`` computes it again all the same (and remembers the new value)."""
    path = Path(path).resolve()
    before = _stat_key(path)
    remembered = None if recompute else _remembered(path, kind, before)
    if remembered is not None:
        return remembered
    digest = compute(path)
    if _stat_key(path) == before:  # not written to while it was read
        remember_digest(path, kind, digest, before)
    return digest


def remember_digest(
    path: str | Path, kind: str, digest: str, stat_key: dict[str, int] | None = None
) -> None:
    """Record ``digest`` for ``path`` as it is now (best effort: a read-only cache is fine)."""
    path = Path(path).resolve()
    digests = _read_digests()
    digests[f"{kind}:{path}"] = {**(stat_key or _stat_key(path)), "digest": digest}
    # Forget files that are gone, so the record does not grow forever (and entries that
    # are not "kind:path", which gpt-spam never wrote).
    digests = {
        key: value
        for key, value in digests.items()
        if ":" in key and Path(key.split(":", 1)[1]).exists()
    }
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json(cache_dir() / _DIGESTS, digests)
    except OSError:
        pass


def recorded_digest(path: str | Path, kind: str) -> str | None:
    """The digest remembered for ``path`` if the file is unchanged since, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    path = path.resolve()
    return _remembered(path, kind, _stat_key(path))


def _remembered(path: Path, kind: str, now: dict[str, int]) -> str | None:
    entry = _read_digests().get(f"{kind}:{path}")
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
        return None
    return entry["digest"] if {k: entry.get(k) for k in now} == now else None


def random_base_file(record: dict) -> Path:
    """Where the random base described by ``record`` (its seed, initialisation, model shape
    and tensors' SHA-256) is kept: one file per distinct record."""
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return cache_dir() / _RANDOM_BASES / f"{key}.safetensors"


def remembered_files() -> list[Path]:
    """What loading remembers, as files: the record of digests and the kept random bases."""
    bases = cache_dir() / _RANDOM_BASES
    files = [
        cache_dir() / _DIGESTS,
        *(sorted(bases.glob("*.safetensors")) if bases.is_dir() else []),
    ]
    return [path for path in files if path.is_file()]
