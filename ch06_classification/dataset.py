"""The messages as token ids (section 6.3): ``SpamDataset``.

GPT-2 has no padding token, so like the book we pad with ``<|endoftext|>`` (id 50256), to
the length of the longest message: the rows of a batch must be equally long.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import pandas as pd
import tiktoken
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gpt.tokenizer import END_OF_TEXT_ID, encode_message

Padding = Literal["fixed", "batch"]


class Example(NamedTuple):
    """One message as ``SpamDataset(..., with_lengths=True)`` hands it out."""

    input_ids: Tensor  # [T] int64
    label: Tensor  # [] int64
    length: Tensor  # [] int64, number of real tokens at the start of input_ids


class SpamDataset(Dataset):
    """The messages of one split CSV, tokenized once, up front (listing 6.4).

    ``max_length=None`` uses the longest message in this file, which is right for the
    training set; the validation and test sets must be given the training set's
    ``max_length`` instead. Longer messages are cut to ``max_length`` tokens (their number
    is ``num_truncated``); ``context_length``, the model's, caps ``max_length``, so that a
    message longer than the model can read is cut rather than crash the model.

    Item ``i`` is ``(input_ids, label)``, as in the book. Two improvements are keywords:
    ``with_lengths=True`` adds each message's number of real tokens, ``(input_ids, label,
    length)``, so the last real token can be found whatever the padding; and
    ``padding="batch"`` stores no padding, for loaders that pad each batch only to its own
    longest message (``finetuning/loaders.py``). ``csv_file`` may also be a DataFrame with
    the file's ``Label`` and ``Text`` columns, read already.
    """

    def __init__(
        self,
        csv_file: str | Path | pd.DataFrame,
        tokenizer: tiktoken.Encoding,
        max_length: int | None = None,
        pad_token_id: int = END_OF_TEXT_ID,
        padding: Padding = "fixed",
        with_lengths: bool = False,
        context_length: int | None = None,
    ) -> None:
        if padding not in ("fixed", "batch"):
            raise ValueError(f"padding must be 'fixed' or 'batch', not {padding!r}")
        if isinstance(csv_file, pd.DataFrame):
            self.data = csv_file
        else:
            # Texts as written: pandas would read a message such as "NA" or "null" as missing.
            self.data = pd.read_csv(csv_file, dtype={"Text": str}, keep_default_na=False)

        # Pre-tokenize texts
        self.encoded_texts = [encode_message(tokenizer, text) for text in self.data["Text"]]
        if max_length is None:
            self.max_length = self._longest_encoded_length()
        else:
            self.max_length = max_length
        if context_length is not None:
            self.max_length = min(self.max_length, context_length)
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {self.max_length}")

        # Truncate sequences if they are longer than max_length
        self.num_truncated = sum(len(ids) > self.max_length for ids in self.encoded_texts)
        self.encoded_texts = [
            encoded_text[: self.max_length] for encoded_text in self.encoded_texts
        ]
        self.lengths = torch.tensor([len(ids) for ids in self.encoded_texts])
        if (self.lengths == 0).any():  # the classified token is the last real one: none here
            row = int((self.lengths == 0).int().argmax()) + 1
            raise ValueError(
                f"{csv_file if isinstance(csv_file, (str, Path)) else 'data'}: "
                f"message {row} is empty"
            )

        # Pad sequences to the longest sequence
        if padding == "fixed":
            self.encoded_texts = [
                encoded_text + [pad_token_id] * (self.max_length - len(encoded_text))
                for encoded_text in self.encoded_texts
            ]
        self.pad_token_id = pad_token_id
        self.padding = padding
        self.with_lengths = with_lengths
        self.labels = torch.tensor(self.data["Label"].to_numpy(), dtype=torch.long)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor] | Example:
        encoded = torch.tensor(self.encoded_texts[index], dtype=torch.long)
        label = self.labels[index]
        if self.with_lengths:
            return Example(encoded, label, self.lengths[index])
        return encoded, label

    def __len__(self) -> int:
        return len(self.data)

    def _longest_encoded_length(self) -> int:
        return max(len(encoded_text) for encoded_text in self.encoded_texts)
