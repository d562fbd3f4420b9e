"""Fine-tuning without recomputing what never changes: the same numbers, many times faster.

The book's recipe pads every message to 120 tokens and runs all 12 blocks on every step of
every epoch. Three observations make most of that work unnecessary, without changing a
single result beyond float rounding:

1. **No compute on padding.** Under the causal mask a real token never attends to the
   padding after it, so padding changes nothing we read. Messages average ~30 tokens.
2. **The frozen prefix is a constant.** With blocks ``0..k-1`` frozen and dropout 0, their
   output for a message is a fixed function of its token ids. We compute it once per
   message (``encode_prefix``) and train only blocks ``k..`` on top, across all epochs.
3. **Only one position is read.** The classifier reads one token ``t`` per message. The
   last block must still see keys and values at positions ``0..t``, but its query,
   attention output, feed-forward, the final norm and the head are needed at ``t`` alone
   (``last_position_block``).

The training loop is unchanged: ``PrefixCachedClassifier`` maps (cached hidden states,
lengths) to logits, as ``GPTClassifier`` maps (token ids, lengths) to logits, and its data
loaders draw exactly the same shuffled batches.

The book's own training cell can take the same shortcut without changing a line but its
model: ``cache_frozen_blocks(model)`` (``RowCachedClassifier``) takes the book's batches of
token ids as they are and keeps the frozen blocks' output of each padded row the first time
it sees it, so ``train_classifier_simple`` runs in minutes on a CPU instead of an hour.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from ch06_classification.classifier import classified_positions
from ch06_classification.finetuning.model import first_trainable_block, positions_in_batch
from ch06_classification.speed.batching import batches_by_length, pad_right
from ch06_classification.speed.devices import autocast
from gpt.model import GPTModel, TransformerBlock
from gpt.tokenizer import END_OF_TEXT_ID

if TYPE_CHECKING:  # pandas, which SpamDataset reads with, is no import for classifying
    from ch06_classification.dataset import SpamDataset


def fast_path_unavailable_reason(model: GPTModel) -> str | None:
    """Why the fast path cannot train ``model`` exactly, or None when it can."""
    if model.cfg.drop_rate > 0:
        return f"dropout is {model.cfg.drop_rate}, so the frozen blocks are not deterministic"
    if any(p.requires_grad for p in (model.tok_emb.weight, model.pos_emb.weight)):
        return "the embeddings are trainable, so no prefix of the model is frozen"
    return None


def classified_sequences(
    dataset: SpamDataset, token_position: str, causal: bool = True, whole_rows: bool = False
) -> list[torch.Tensor]:
    """The token ids each message's prediction depends on, as the dataset holds its rows.

    Under the causal mask, the classified token's output depends only on the tokens up to
    it, so each row is cut just after it: the real tokens for ``flexible``, the whole padded
    row for ``last`` (its last position is padding), and one token for ``first``. Without
    the mask, or when every position is read (``whole_rows``: averaged outputs), every
    token of the row counts.
    """
    rows = [torch.tensor(ids) for ids in dataset.encoded_texts]
    if not causal or whole_rows:
        return rows
    return [
        row[: int(classified_positions(length, len(row), token_position)) + 1]
        for row, length in zip(rows, dataset.lengths, strict=True)
    ]


@torch.inference_mode()
def encode_prefix(
    model: GPTModel,
    sequences: Sequence[torch.Tensor],
    num_blocks: int,
    device: torch.device,
    tokens_per_batch: int = 2048,
    precision: str = "fp32",
    progress: bool = False,
) -> list[torch.Tensor]:
    """Hidden states after the first ``num_blocks`` blocks, one [tokens, emb] per sequence.

    Each distinct sequence is computed once (the collection repeats many messages), and
    sequences are batched by length, so a batch is padded only to its own longest row (the
    padding's outputs are sliced off: under the causal mask they never touch real tokens).
    ``progress`` shows a bar on stderr (for gpt2-small on a CPU this takes a minute).
    """
    keys = [tuple(sequence.tolist()) for sequence in sequences]
    first_seen: dict[tuple[int, ...], int] = {}
    for i, key in enumerate(keys):
        first_seen.setdefault(key, i)
    lengths = [len(s) for s in sequences]
    batches = batches_by_length(
        lengths,
        indices=first_seen.values(),
        tokens_per_batch=tokens_per_batch,
        # Without the causal mask, padding a batch would change what real tokens attend to.
        equal_lengths=not model.cfg.causal,
    )
    blocks = model.trf_blocks[:num_blocks]
    if precision == "bf16":
        # Autocast would convert every frozen weight to bfloat16 again for every batch;
        # converting a copy once does the same arithmetic without the repeated traffic.
        blocks = copy.deepcopy(blocks)
        for module in blocks.modules():
            if isinstance(module, nn.Linear):  # LayerNorm stays float32, as autocast wants
                module.to(torch.bfloat16)
    features: dict[int, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=len(first_seen),
        desc="Caching the frozen blocks",
        unit="message",
        disable=not progress,
    )
    for chunk in batches:
        # Any id pads: the padding's outputs are sliced off below.
        ids = pad_right([sequences[i] for i in chunk], pad_value=0)
        with autocast(device, precision):
            x = model.embed(ids.to(device))
            for block in blocks:
                x = block(x)
        # Kept in the precision computed in: bfloat16 halves the cache (gpt2-small's last
        # position over 1,024 tokens: 2.4 instead of 4.7 GB); the top upcasts each batch.
        stored = torch.bfloat16 if precision == "bf16" else torch.float32
        for row, i in enumerate(chunk):
            features[i] = x[row, : len(sequences[i])].to(stored, copy=True)
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return [features[first_seen[key]] for key in keys]


def last_position_block(
    block: TransformerBlock, x: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """``block(x)[row, positions[row]]`` for every row, computing only what that needs.

    Only one query per row is needed, so the attention is rearranged (exactly, by the
    associativity of matrix products) to avoid projecting every token to a key and a value:

    - score of token n = q . (W_k x_n + b_k) = (W_k^T q) . x_n + q . b_k: fold the key
      projection into the one query instead;
    - output = sum_n a_n (W_v x_n + b_v) = W_v (sum_n a_n x_n) + b_v (the weights a_n sum
      to 1): average the tokens first, then project the one average.

    Here x_n is token n after the block's first LayerNorm, per head. This costs
    O(tokens x emb) per head instead of O(tokens x emb^2). The residuals, the feed-forward
    and the norms run at the classified position only. Assumes dropout 0 (the fast path's
    condition). x: [batch, tokens, emb] -> [batch, emb].

    Why the key bias term ``q . b_k`` is kept although it cannot change the result: it is
    the same for every token n, and softmax is shift-invariant, so the true gradient of
    ``W_key.bias`` is exactly zero. Dropping the term would leave ``W_key.bias.grad`` as
    None instead of zero, and AdamW skips parameters without a gradient, including its
    decoupled weight decay, which shrinks every parameter that has one, even a zero one.
    Training the full model would then decay the key bias and the fast path would not, and
    the two would drift apart. Keeping the term gives the bias its (zero) gradient, so the
    optimizer treats it exactly as in the full block.
    """
    att = block.att
    batch, num_tokens, emb_dim = x.shape
    heads, head_dim = att.num_heads, att.head_dim
    rows = torch.arange(batch, device=x.device)

    # Shapes: B batch, T tokens, E emb_dim, nh heads, hs head_dim (nh * hs == E).
    normed = block.norm1(x)  # (B, T, E)
    x_at = x[rows, positions]  # (B, E): the only position whose output is read
    query = att.W_query(normed[rows, positions]).view(batch, heads, head_dim)  # (B, nh, hs)
    # nn.Linear stores its weight as [out_features, in_features] = (E, E) and computes
    # x @ weight.T, so output feature o is row o. The full block splits the output features
    # into heads as (nh, hs), head h taking the contiguous rows h*hs .. (h+1)*hs-1; viewing
    # the weight as (nh, hs, E) therefore gives each head its own (hs, E) projection.
    key_weight = att.W_key.weight.reshape(heads, head_dim, emb_dim)  # (nh, hs, E)
    value_weight = att.W_value.weight.reshape(heads, head_dim, emb_dim)  # (nh, hs, E)

    # W_k^T q, per head: (B, nh, hs) x (nh, hs, E) -> (B, nh, E)
    folded_query = torch.einsum("bhd,hde->bhe", query, key_weight)
    # (W_k^T q) . x_n for every token n: (B, nh, E) x (B, T, E) -> (B, nh, T)
    scores = torch.einsum("bhe,bte->bht", folded_query, normed)
    if att.W_key.bias is not None:  # q . b_k: (B, nh, 1), kept for the gradient (docstring)
        scores = scores + (query * att.W_key.bias.view(heads, head_dim)).sum(-1, keepdim=True)
    scores = scores / head_dim**0.5
    if att.causal:  # the causal mask seen from the classified position: tokens 0..position
        visible = torch.arange(num_tokens, device=x.device) <= positions.unsqueeze(1)  # (B, T)
        scores = scores.masked_fill(~visible.unsqueeze(1), float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, nh, T): the a_n
    # sum_n a_n x_n, per head: (B, nh, T) x (B, T, E) -> (B, nh, E)
    average = torch.einsum("bht,bte->bhe", weights, normed)
    # W_v (sum_n a_n x_n), per head: (B, nh, E) x (nh, hs, E) -> (B, nh, hs)
    context = torch.einsum("bhe,hde->bhd", average, value_weight)
    if att.W_value.bias is not None:
        context = context + att.W_value.bias.view(heads, head_dim)  # (B, nh, hs)

    # Heads side by side, as the full block's transpose-and-view does: (B, nh, hs) -> (B, E)
    hidden = x_at + att.out_proj(context.reshape(batch, emb_dim))  # (B, E)
    return hidden + block.ff(block.norm2(hidden))  # (B, E)


def logits_at(model: GPTModel, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``model(input_ids)[row, positions[row]]``, with the last block, the final norm and
    the head run only at those positions. For inference (dropout off): [batch, classes]."""
    x = model.embed(input_ids)
    for block in model.trf_blocks[:-1]:
        x = block(x)
    x = last_position_block(model.trf_blocks[-1], x, positions)
    return model.out_head(model.final_norm(x))


def classify_logits(
    model: GPTModel,
    input_ids: torch.Tensor,
    lengths: torch.Tensor,
    token_position: str,
    average_embeddings: bool = False,
) -> torch.Tensor:
    """What a classifier trained with these settings outputs for a batch: [batch, classes].

    For inference; the same numbers as ``GPTClassifier``, computing only what they need."""
    if average_embeddings:  # every position is read
        return model(input_ids).mean(dim=1)
    positions = classified_positions(lengths, input_ids.shape[1], token_position)
    return logits_at(model, input_ids, positions)


class ClassifiedTokenClassifier(nn.Module):
    """``GPTClassifier`` for training every block on every step (nothing can be cached:
    the embeddings train too), with its last block, final norm and head run at the
    classified token only (``logits_at``): the same logits and gradients, and for
    gpt2-small about a twelfth less work. Needs dropout 0, as ``last_position_block``."""

    def __init__(self, model: GPTModel, token_position: str = "flexible") -> None:
        super().__init__()
        if model.cfg.drop_rate > 0:
            raise ValueError("the last block runs at one position only without dropout")
        self.gpt = model
        self.token_position = token_position

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        positions = positions_in_batch(input_ids, lengths, self.token_position)
        return logits_at(self.gpt, input_ids, positions)


class PrefixCachedClassifier(nn.Module):
    """The trainable top of a classifier, fed with cached outputs of its frozen bottom.

    ``forward(hidden, lengths)`` takes the hidden states after block ``first_block - 1``
    ([batch, tokens, emb], right-padded) and the real lengths of the messages, and
    classifies each row at ``token_position`` (or averages every position's output, with
    ``average_embeddings``). It shares its modules with ``model``: training it trains the
    model.
    """

    def __init__(
        self,
        model: GPTModel,
        first_block: int,
        token_position: str = "flexible",
        average_embeddings: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.first_block = first_block
        self.token_position = token_position
        self.average_embeddings = average_embeddings

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        blocks = self.model.trf_blocks[self.first_block :]
        # The residual stream stays float32, as in the full model (bf16 caches are upcast).
        hidden = hidden.float()
        if self.average_embeddings:  # every position is read: no shortcut in the last block
            for block in blocks:
                hidden = block(hidden)
            # The head is linear, so the average of its outputs is its output of the average.
            return self.model.out_head(self.model.final_norm(hidden).mean(dim=1))
        positions = classified_positions(lengths, hidden.shape[1], self.token_position)
        for block in blocks[:-1]:  # every position: the next block needs their keys/values
            hidden = block(hidden)
        if len(blocks):
            last = last_position_block(blocks[-1], hidden, positions)
        else:  # only the head is trained: the cache holds the last block's output
            last = hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]
        return self.model.out_head(self.model.final_norm(last))


class RowCachedClassifier(nn.Module):
    """The book's model for the book's loaders, computing its frozen blocks once per row.

    ``train_classifier_simple(cache_frozen_blocks(model), train_loader, ...)`` trains
    ``model`` on the book's ``(input_batch, target_batch)`` batches exactly as
    ``train_classifier_simple(model, train_loader, ...)`` does (logits, losses and
    gradients equal up to float rounding: ``tests/speed/test_fast_path.py``). The book's
    loaders yield the same padded rows every epoch, and with the blocks below the first
    trainable one frozen and dropout 0, their output for a row never changes: the first
    time a row is seen, it is computed (``encode_prefix``) and kept in memory, keyed by
    the row's token ids; from then on only the trainable top runs, and its last block at
    the classified position only (``PrefixCachedClassifier``).

    ``forward(input_batch, lengths=None)`` returns [batch, classes]: the logits the book
    reads, ``model(input_batch)[:, -1, :]``, for ``token_position="last"``; those of each
    row's last real token for ``"flexible"`` (at ``lengths - 1``, or, without ``lengths``,
    after the tokens that are not ``pad_token_id``, as ``classification_logits`` counts
    them); the first token's for ``"first"``. It shares its modules with ``model``: an
    optimizer over ``model.parameters()`` trains it. Which blocks are frozen is read once,
    here: unfreezing more of ``model`` later needs a new wrapper (the cache would be stale).
    """

    def __init__(
        self, model: GPTModel, token_position: str = "last", pad_token_id: int = END_OF_TEXT_ID
    ) -> None:
        super().__init__()
        reason = fast_path_unavailable_reason(model)
        if reason is not None:
            raise ValueError(f"the frozen blocks cannot be cached: {reason}")
        self.gpt = model
        self.token_position = token_position
        self.pad_token_id = pad_token_id
        self.top = PrefixCachedClassifier(model, first_trainable_block(model), token_position)
        # The frozen blocks' output, [tokens, emb] on the model's device, for each row cut
        # after its classified token (the causal mask hides every later token from it).
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(
        self, input_batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        if lengths is None and self.token_position == "flexible":
            lengths = (input_batch != self.pad_token_id).sum(dim=1)
        positions = positions_in_batch(input_batch, lengths, self.token_position)  # (B,)
        if self.gpt.cfg.causal:
            rows = [row[: int(p) + 1] for row, p in zip(input_batch.cpu(), positions, strict=True)]
        else:  # every token of the row reaches the classified one
            rows = list(input_batch.cpu())
        keys = [tuple(row.tolist()) for row in rows]
        missing = {key: row for key, row in zip(keys, rows, strict=True) if key not in self.cache}
        if missing:
            hidden = encode_prefix(
                self.gpt, list(missing.values()), self.top.first_block, input_batch.device
            )
            self.cache.update(zip(missing, hidden, strict=True))
        # Right-padded as the rows were cut (the padding's values are never read):
        # (B, tokens up to the last classified one, E). A copy outside inference mode, so
        # that autograd may use it.
        hidden = pad_right([self.cache[key] for key in keys], pad_value=0.0)
        return self.top(hidden, positions + 1)  # the top reads position (lengths - 1)


def cache_frozen_blocks(model: GPTModel, token_position: str = "last") -> RowCachedClassifier:
    """``model`` for the book's ``train_classifier_simple`` and ``calc_*`` functions, with its
    frozen blocks computed once per distinct row instead of on every step: the book's
    numbers, in minutes on a CPU (see ``RowCachedClassifier``)."""
    return RowCachedClassifier(model, token_position)


class PrefixFeatures(Dataset):
    """Cached hidden states with their labels and the messages' real lengths; item ``i`` is
    ([tokens, emb], label, length)."""

    def __init__(
        self, features: Sequence[torch.Tensor], labels: Sequence[int], lengths: Sequence[int]
    ) -> None:
        self.features = list(features)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index], self.lengths[index]


def collate_features(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch of cached hidden states: (hidden, labels, lengths)."""
    features, labels, lengths = zip(*batch, strict=True)
    hidden = pad_right(features, pad_value=0.0)
    return hidden, torch.stack(labels), torch.stack(lengths)


def loader_like(token_loader: DataLoader, features: PrefixFeatures) -> DataLoader:
    """A loader over ``features`` that draws exactly the batches ``token_loader`` draws.

    Same batch size, same ``drop_last``, and, when shuffled, a fresh generator with the
    same seed: the same random permutations of the same number of items, epoch by epoch.
    """
    if len(features) != len(token_loader.dataset):
        raise ValueError("features and token loader must hold the same examples")
    shuffled = isinstance(token_loader.sampler, RandomSampler)
    generator = None
    if shuffled:
        if token_loader.generator is None:
            raise ValueError("a shuffled loader needs a seeded generator to be reproduced")
        generator = torch.Generator().manual_seed(token_loader.generator.initial_seed())
    return DataLoader(
        features,
        batch_size=token_loader.batch_size,
        shuffle=shuffled,
        drop_last=token_loader.drop_last,
        generator=generator,
        collate_fn=collate_features,
    )


def prepare_fast_path(
    model: GPTModel,
    token_loaders: Sequence[DataLoader],
    device: torch.device,
    precision: str = "fp32",
    token_position: str = "flexible",
    average_embeddings: bool = False,
    progress: bool = False,
    encode: Callable[..., list[torch.Tensor]] = encode_prefix,
) -> tuple[PrefixCachedClassifier, list[DataLoader]]:
    """Encode every split's frozen prefix once; return the trainable top and its loaders.

    ``token_loaders`` are the loaders the full model would train on (over
    ``SpamDataset`` s); the returned ones draw the same batches of cached hidden states.
    ``encode`` computes the prefix (``encode_prefix``'s arguments; several processes share
    the work with ``World.encode_prefix``).
    """
    first_block = first_trainable_block(model)
    datasets: list[SpamDataset] = [loader.dataset for loader in token_loaders]  # type: ignore[misc]
    sequences_per_split = [
        classified_sequences(d, token_position, model.cfg.causal, average_embeddings)
        for d in datasets
    ]
    # All splits in one call: a message repeated across splits is computed once.
    everything = [sequence for sequences in sequences_per_split for sequence in sequences]
    features = encode(
        model, everything, first_block, device, precision=precision, progress=progress
    )
    loaders, start = [], 0
    for sequences, dataset, token_loader in zip(
        sequences_per_split, datasets, token_loaders, strict=True
    ):
        split_features = features[start : start + len(sequences)]
        start += len(sequences)
        cached = PrefixFeatures(split_features, dataset.labels, dataset.lengths)
        loaders.append(loader_like(token_loader, cached))
    top = PrefixCachedClassifier(model, first_block, token_position, average_embeddings)
    return top, loaders
