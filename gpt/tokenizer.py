"""The GPT-2 tokenizer (tiktoken's byte-pair encoding), built from files shipped with the package.

GPT-2's tokenizer is two files OpenAI published with the model (``gpt/bpe/``, 1.5 MB, MIT):

- ``encoder.json`` maps each of the 50,257 tokens to its id;
- ``vocab.bpe`` lists the 50,000 merges in the order byte-pair encoding learned them.

``tiktoken.get_encoding("gpt2")`` downloads these two files on first use, so on a machine
without internet it fails. Here the same encoding is built from the shipped copies, with
no network ever: the result is byte-for-byte tiktoken's (a test compares them).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import tiktoken

from gpt.errors import UserFacingError

# GPT-2 has no padding token; like the book, we pad with <|endoftext|>.
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256

BPE_DIR = Path(__file__).resolve().parent / "bpe"
ENCODER_FILE = "encoder.json"
MERGES_FILE = "vocab.bpe"
# The SHA-256 of OpenAI's published files (tiktoken checks its downloads against the same).
BPE_SHA256 = {
    ENCODER_FILE: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    MERGES_FILE: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}

# How GPT-2 cuts text into words before merging bytes: contractions, runs of letters, of
# digits, of other symbols, and whitespace (tiktoken's r50k pattern, GPT-2's regex).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """GPT-2's byte-pair encoding, built once per process from the shipped files."""
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=gpt2_mergeable_ranks(BPE_DIR),
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
        explicit_n_vocab=END_OF_TEXT_ID + 1,
    )


def gpt2_mergeable_ranks(folder: Path) -> dict[bytes, int]:
    """Each token's bytes and its rank (= its id) from ``encoder.json`` and ``vocab.bpe``.

    GPT-2's files write bytes as printable characters (``bytes_to_unicode``: a space is
    "Ġ"), so each token is mapped back to its bytes. A token's rank is the order in which
    byte-pair encoding learned it: the 256 single bytes first, then the merges in the order
    of ``vocab.bpe``. The two files must agree on that, which is checked.
    """
    encoder_text = _read_checked(folder / ENCODER_FILE)
    merges_text = _read_checked(folder / MERGES_FILE)
    # Each printable character back to the byte it stands for, as a str.translate table:
    # the character of byte b becomes chr(b), which Latin-1 encodes as the byte b.
    to_byte = {ord(char): byte for byte, char in bytes_to_unicode().items()}

    def as_bytes(token: str) -> bytes:
        return token.translate(to_byte).encode("latin-1")

    encoder = json.loads(encoder_text)
    ranks = {as_bytes(token): rank for token, rank in encoder.items() if token != END_OF_TEXT}
    merges = [line.split() for line in merges_text.splitlines()[1:] if line]  # after "#version"
    for number, (first, second) in enumerate(merges):
        if ranks.get(as_bytes(first) + as_bytes(second)) != 256 + number:
            raise UserFacingError(f"{folder}: {ENCODER_FILE} and {MERGES_FILE} disagree")
    return ranks


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (OpenAI's ``encoder.py``).

    Printable bytes stand for themselves; the others (control characters, space, ...)
    are shifted to unused characters from 256 on, in byte order.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [byte for byte in range(256) if byte not in printable]
    mapping = {byte: chr(byte) for byte in printable}
    mapping.update({byte: chr(256 + n) for n, byte in enumerate(shifted)})
    return mapping


def _read_checked(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserFacingError(
            f"the GPT-2 tokenizer file {path} cannot be read ({error.strerror or error}); "
            "it is part of the package: reinstall it (pip install -e .)"
        ) from None
    if hashlib.sha256(data).hexdigest() != BPE_SHA256[path.name]:
        raise UserFacingError(
            f"the GPT-2 tokenizer file {path} is damaged (its SHA-256 is not OpenAI's); "
            "restore it from the repository (git checkout -- gpt/bpe)"
        )
    return data.decode("utf-8")


def encode_message(tokenizer: tiktoken.Encoding, text: str) -> list[int]:
    """The GPT-2 token ids of a text someone else wrote.

    Untrusted text may contain ``<|endoftext|>``: that is encoded as the characters it is,
    not as the special token (tiktoken would otherwise refuse it).
    """
    return tokenizer.encode(text, disallowed_special=())
