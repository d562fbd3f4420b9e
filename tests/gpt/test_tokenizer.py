"""The GPT-2 tokenizer is built from the files shipped in ``gpt/bpe``, with no network, and
is tiktoken's own ``gpt2`` encoding byte for byte."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import tiktoken

from gpt.errors import UserFacingError
from gpt.tokenizer import (
    BPE_DIR,
    ENCODER_FILE,
    END_OF_TEXT,
    END_OF_TEXT_ID,
    MERGES_FILE,
    get_tokenizer,
    gpt2_mergeable_ranks,
)

# Where tiktoken's own gpt2 encoding downloads its two files from; it caches each under
# the SHA-1 of its URL.
OPENAI_URLS = {
    MERGES_FILE: "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    ENCODER_FILE: "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}

TEXTS = [
    "Hello, world!",
    "Every effort moves you",
    "URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot! "
    "Txt the word: CLAIM to No: 81010 T&C www.dbuk.net LCCLTD POBOX 4403LDNW1A7RW18",
    "I'm gonna be home soon and i don't want to talk about this stuff anymore tonight, k?",
    "  leading and trailing spaces  \n\n\ttabs\r\nand line breaks   ",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 😀👍🏽, Ελληνικά, русский",
    "numbers 1234567890 3.14159 -42 1e-5 0x1F",
    "they'll we've she's I'd you're it's O'Neil's",
    "",
    "a" * 500,
]


@pytest.fixture(scope="module")
def tiktoken_gpt2(tmp_path_factory) -> tiktoken.Encoding:
    """tiktoken's own ``gpt2`` encoding, built by tiktoken's code from the shipped files
    placed in its cache (tiktoken checks their SHA-256 against OpenAI's first)."""
    cache = tmp_path_factory.mktemp("tiktoken_cache")
    for name, url in OPENAI_URLS.items():
        shutil.copyfile(BPE_DIR / name, cache / hashlib.sha1(url.encode()).hexdigest())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return tiktoken.get_encoding("gpt2")


def test_the_shipped_tokenizer_is_tiktokens_gpt2(tiktoken_gpt2):
    ours = get_tokenizer()
    assert ours.name == "gpt2"
    assert ours.n_vocab == tiktoken_gpt2.n_vocab == 50257
    assert ours.eot_token == tiktoken_gpt2.eot_token == END_OF_TEXT_ID
    assert ours._mergeable_ranks == tiktoken_gpt2._mergeable_ranks
    for text in TEXTS:
        assert ours.encode(text) == tiktoken_gpt2.encode(text), text
        assert ours.decode(ours.encode(text)) == text
    # The special token: allowed, it is one id; as plain text, it is its characters.
    text = f"first message{END_OF_TEXT}second message"
    assert ours.encode(text, allowed_special="all") == tiktoken_gpt2.encode(
        text, allowed_special="all"
    )
    assert END_OF_TEXT_ID in ours.encode(text, allowed_special="all")
    as_text = ours.encode(text, disallowed_special=())
    assert as_text == tiktoken_gpt2.encode(text, disallowed_special=())
    assert END_OF_TEXT_ID not in as_text
    with pytest.raises(ValueError):  # like tiktoken, refused unless said how to read it
        ours.encode(text)


def test_the_books_example_ids():
    # Section 2.5 of the book: "Hello, do you like tea? <|endoftext|> In the sunlit ..."
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    assert get_tokenizer().encode(text, allowed_special={END_OF_TEXT}) == [
        15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250,
        8812, 2114, 286, 617, 34680, 27271, 13,
    ]  # fmt: skip


def test_a_damaged_tokenizer_file_is_one_clear_error(tmp_path):
    for name in (ENCODER_FILE, MERGES_FILE):
        shutil.copyfile(BPE_DIR / name, tmp_path / name)
    merges = tmp_path / MERGES_FILE
    merges.write_text(merges.read_text(encoding="utf-8").replace("Ġ t\n", "Ġ x\n", 1))
    with pytest.raises(UserFacingError, match=r"vocab\.bpe is damaged"):
        gpt2_mergeable_ranks(tmp_path)
    (tmp_path / ENCODER_FILE).unlink()
    with pytest.raises(UserFacingError, match=r"encoder\.json cannot be read"):
        gpt2_mergeable_ranks(tmp_path)
