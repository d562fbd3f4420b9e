"""The GPT-2 tokenizer (tiktoken's byte-pair encoding) behind one function."""

from __future__ import annotations

import functools

import tiktoken

from gpt.errors import UserFacingError

# GPT-2 has no padding token; like the book, we pad with <|endoftext|>.
END_OF_TEXT_ID = 50256


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """GPT-2's byte-pair encoding, loaded once per process.

    tiktoken downloads two small BPE files the first time and caches them; on a machine
    without internet, point ``TIKTOKEN_CACHE_DIR`` at a folder that already holds them.
    """
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as error:  # tiktoken raises plain requests/OS errors here
        raise UserFacingError(
            f"could not load the GPT-2 tokenizer files ({type(error).__name__}); "
            "tiktoken downloads them once from "
            "openaipublic.blob.core.windows.net: connect to the internet once, or set "
            "TIKTOKEN_CACHE_DIR to a folder that holds them"
        ) from error
