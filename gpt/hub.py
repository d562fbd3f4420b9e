"""Finding OpenAI's GPT-2 weights for the pipeline: in a folder you give, or downloaded from
the Hugging Face Hub with a progress bar, a shared cache, and one-line errors that say what
to do instead; and checking a cached download against its published SHA-256.

The book's ``download_and_load_gpt2`` (``gpt/weights.py``) downloads the same file into the
same cache; this is the hardened download that ``load_pretrained_gpt`` and programs built on
this package use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpt.config import HF_REPOS, get_config
from gpt.weights import WEIGHTS_FILENAME, WeightsError

WEIGHTS_DIR_ENV = "GPT2_WEIGHTS_DIR"


class WeightsDownloadError(WeightsError):
    """The Hub did not give the weights. ``failure`` says what failed and why; the message
    adds the two ways round it: weights already on disk, or random ones."""

    def __init__(self, failure: str) -> None:
        self.failure = failure
        super().__init__(
            f"{failure}; to use weights you already have, put {WEIGHTS_FILENAME} in a folder "
            f"and give that folder as weights_dir (or set {WEIGHTS_DIR_ENV}=FOLDER), or start "
            "from random weights"
        )


def find_local_weights(preset: str, weights_dir: str | Path) -> Path:
    """The weights file for ``preset`` in a local folder (or ``weights_dir`` itself if a file).

    A folder may hold ``model.safetensors`` (the Hub's name), ``<preset>.safetensors``, or
    ``<preset>/model.safetensors``, so one folder can keep several sizes side by side.
    """
    path = Path(weights_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise WeightsError(f"weights folder {path} does not exist")
    candidates = [
        path / f"{preset}.safetensors",
        path / preset / WEIGHTS_FILENAME,
        path / WEIGHTS_FILENAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"no weights for {preset} in {path}: expected one of "
        + ", ".join(str(c.relative_to(path)) for c in candidates)
    )


def download_weights(
    preset: str = "gpt2-small",
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download (or reuse from the cache) the ``model.safetensors`` of a released GPT-2.

    ``huggingface_hub`` does the work: a progress bar, a cache shared with every other
    program that uses it (``~/.cache/huggingface/hub`` unless ``HF_HOME`` says otherwise),
    resuming an interrupted download, and a size check before an ``.incomplete`` file is
    renamed into place, so a half-downloaded file is never taken for a complete one.
    """
    # huggingface_hub is imported only where it is used: classifying imports this module too.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    get_config(preset)  # a clear error for an unknown preset
    repo_id = HF_REPOS[preset]
    # OpenAI's weights never change: a cached copy is used without asking the Hub again
    # (which, offline, would retry for half a minute before falling back to the cache).
    cached = cached_weights(preset, cache_dir)
    if cached is not None:
        return cached
    where = endpoint or "huggingface.co"
    print(f"Downloading {repo_id}/{WEIGHTS_FILENAME} from {where} (once; cached afterwards)")
    try:
        with _quiet_retry_warnings():
            path = hf_hub_download(
                repo_id=repo_id, filename=WEIGHTS_FILENAME, cache_dir=cache_dir, endpoint=endpoint
            )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise WeightsDownloadError(
            f"could not download {repo_id}/{WEIGHTS_FILENAME} from {where} ({_why(error)})"
        ) from error
    return Path(path)


def _why(error: Exception) -> str:
    """A few words on a failed download, without the library's exception names."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled  # (as above)

    if isinstance(error, OfflineModeIsEnabled) or isinstance(error.__cause__, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so the Hub is not contacted"
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code}"
    if isinstance(error, PermissionError | IsADirectoryError | NotADirectoryError):
        return f"cannot write the cache: {error.strerror}"
    return "no connection to the server"


def cached_weights(preset: str, cache_dir: str | Path | None = None) -> Path | None:
    """The weights file of ``preset`` if the Hugging Face cache holds it, else None."""
    from huggingface_hub import try_to_load_from_cache  # (as in download_weights)

    cached = try_to_load_from_cache(HF_REPOS[preset], WEIGHTS_FILENAME, cache_dir=cache_dir)
    return Path(cached) if isinstance(cached, str) else None


@contextmanager
def _quiet_retry_warnings() -> Iterator[None]:
    """huggingface_hub logs each retry of a failed request; the error we raise says it all."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def find_weights(
    preset: str = "gpt2-small",
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """The weights file to load: a local folder if one is given (argument, then the
    ``GPT2_WEIGHTS_DIR`` environment variable), else the Hugging Face Hub download."""
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or None
    if weights_dir is not None:
        return find_local_weights(preset, weights_dir)
    return download_weights(preset, cache_dir=cache_dir, endpoint=endpoint)


def verify_cached_download(path: str | Path) -> bool | None:
    """Check a file from the Hub cache against its SHA-256, which names its cache blob.

    The Hub stores large (LFS) files under their SHA-256, so the cache names each blob by
    it: hashing the file and comparing costs no network. Returns True when it matches,
    None when the blob is not named by a SHA-256 (nothing to compare), and raises
    ``WeightsError`` on a mismatch.
    """
    blob = Path(path).resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return None
    digest = hashlib.sha256()
    with blob.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        raise WeightsError(
            f"{path} is corrupt (its SHA-256 does not match the published one); "
            f"delete {blob} and download again"
        )
    return True
