"""The whole fine-tuning recipe in one call: data, model, training path, training, results.

``fine_tune(TrainingSettings())`` is the book's recipe (gpt2-small, last block trainable,
5 epochs, batch 8, AdamW lr 5e-5, weight decay 0.1, seed 123). The command line, the
benchmark and the notebooks all go through here, so they cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from ch06_classification.base_weights import BaseWeights, describe_pretrained, describe_random
from ch06_classification.checkpoint import ClassifierInfo
from ch06_classification.classifier import (
    GPTClassifier,
    build_classifier,
    describe_trainable,
    first_trainable_block,
    trained_parameter_names,
)
from ch06_classification.dataset import DataLoaders, SpamDataset, create_data_loaders
from ch06_classification.fast_path import fast_path_unavailable_reason, prepare_fast_path
from ch06_classification.splits import check_training_splits
from ch06_classification.training import (
    TrainingHistory,
    autocast,
    calc_accuracy_loader,
    make_optimizer,
    pick_device,
    train_classifier_simple,
)
from gpt.errors import UserFacingError
from gpt.model import GPTModel
from gpt.tokenizer import get_tokenizer
from gpt.weights import find_weights

# Past this, caching the frozen blocks' output (the `last` token over 1,024 padded
# positions, say) would cost more memory than recomputing it costs time.
FAST_PATH_CACHE_LIMIT_BYTES = 2 * 1024**3


@dataclass
class TrainingSettings:
    """Every knob of the recipe, with the book's values as defaults."""

    model: str = "gpt2-small"
    weights: str = "pretrained"  # or "random": same shapes, GPT-2's random initialisation
    weights_dir: str | None = None  # local OpenAI weights instead of downloading them
    trainable_layers: str = "last_block"
    token_position: str = "flexible"
    context_length: str | int = "longest"  # "longest" training message, "model" (1,024), or N
    drop_rate: float = 0.0
    epochs: int = 5
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.1
    eval_freq: int = 50
    eval_iter: int = 5
    seed: int = 123
    device: str = "auto"
    precision: str = "fp32"  # or "bf16"
    fast_path: str = "auto"  # "on", "off" (the book's straightforward way), or "auto"
    data_dir: str = "data"
    # Store every tensor instead of only the trained ones plus a record of the base weights.
    full_checkpoint: bool = False
    # Changes to the model's shape, e.g. a tiny random model for tests and CI.
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    model: GPTModel
    info: ClassifierInfo
    history: TrainingHistory
    accuracies: dict[str, float]  # on every example of each split
    path: str  # "fast", "straightforward" or "reference"
    path_description: str
    prefix_seconds: float  # caching the frozen blocks (fast path only)
    train_seconds: float
    # From data and model ready to final accuracies: prefix cache, training, evaluation.
    recipe_seconds: float
    device: str
    # The exact texts it was trained on: evaluation calls a test message "unseen" only
    # if it is not one of them, whatever data folder is evaluated later.
    training_texts: list[str] = field(default_factory=list)


def choose_path(settings: TrainingSettings, model: GPTModel) -> tuple[str, str]:
    """Which training path runs, and a sentence saying why."""
    reason = fast_path_unavailable_reason(model, settings.token_position)
    if settings.fast_path == "off":
        return "reference", "the book's way: padded to max_length, every block on every step"
    if reason is not None:
        if settings.fast_path == "on":
            raise UserFacingError(f"--fast-path on is not possible here: {reason}")
        return "straightforward", f"every trainable block on every step, because {reason}"
    k = first_trainable_block(model)
    frozen = f"blocks 0-{k - 1}" if k > 0 else "no blocks"
    return "fast", (
        f"{frozen} computed once per message and cached, the rest trained "
        "at the classified token only"
    )


def resolve_max_length(context_length: str | int, model: GPTModel) -> int | None:
    """The ``max_length`` to cut messages to (None: the longest training message)."""
    if context_length == "longest":
        return None
    if context_length == "model":
        return model.cfg.context_length
    length = int(context_length)
    if not 1 <= length <= model.cfg.context_length:
        raise UserFacingError(
            f"context length {length} must be between 1 and the model's {model.cfg.context_length}"
        )
    return length


def classified_sequences(dataset: SpamDataset, token_position: str) -> list[torch.Tensor]:
    """The token ids the classifier reads for each message: the real tokens, or for the
    ``last`` token the whole padded row (its last position is a padding token)."""
    if token_position == "last":
        return [torch.tensor(ids) for ids in dataset.encoded_texts]
    return [
        torch.tensor(ids[:length])
        for ids, length in zip(dataset.encoded_texts, dataset.lengths.tolist(), strict=True)
    ]


def fine_tune(
    settings: TrainingSettings, log: Callable[[str], None] = print, progress: bool = True
) -> TrainingResult:
    """Train a spam classifier as ``settings`` say; print progress through ``log`` (and a
    progress bar on stderr while the frozen blocks are cached, unless ``progress=False``)."""
    check_training_splits(settings.data_dir)  # bad data fails now, not after loading GPT-2
    device = pick_device(settings.device)
    tokenizer = get_tokenizer()
    model = build_classifier(
        settings.model,
        settings.weights,
        settings.trainable_layers,
        weights_dir=settings.weights_dir,
        seed=settings.seed,
        drop_rate=settings.drop_rate,
        **settings.config_overrides,
    )
    log(describe_trainable(model))
    base = describe_base(settings, model)

    path, description = choose_path(settings, model)
    # The book pads every message to the same length; that is also what makes its `last`
    # token the same position in every row. Otherwise a batch is padded only to its longest.
    fixed = path == "reference" or settings.token_position == "last"
    loaders = create_data_loaders(
        settings.data_dir,
        tokenizer,
        batch_size=settings.batch_size,
        max_length=resolve_max_length(settings.context_length, model),
        padding="fixed" if fixed else "batch",
        seed=settings.seed,
        context_length=model.cfg.context_length,
    )
    train_dataset: SpamDataset = loaders.train.dataset  # type: ignore[assignment]
    log(
        f"Data: {len(train_dataset):,} training / {len(loaders.validation.dataset):,} validation "
        f"/ {len(loaders.test.dataset):,} test messages, max_length {train_dataset.max_length}; "
        f"{len(loaders.train)} / {len(loaders.validation)} / {len(loaders.test)} batches"
    )
    cut = [loader.dataset.num_truncated for loader in loaders]  # type: ignore[attr-defined]
    if any(cut):
        log(
            f"Cut {cut[0]:,} training / {cut[1]:,} validation / {cut[2]:,} test messages "
            f"longer than {train_dataset.max_length:,} tokens to their first "
            f"{train_dataset.max_length:,}"
        )
    if path == "fast" and _cache_bytes(loaders, settings, model) > FAST_PATH_CACHE_LIMIT_BYTES:
        if settings.fast_path == "on":
            raise UserFacingError("--fast-path on would cache more than 2 GiB of hidden states")
        path, description = "straightforward", "the frozen blocks' cache would exceed 2 GiB"
    log(f"Training path: {path} ({description})")

    model.to(device)
    recipe_start = time.perf_counter()
    prefix_seconds = 0.0
    trainee: torch.nn.Module = GPTClassifier(model, settings.token_position)
    train_loaders: list[DataLoader] = list(loaders)
    if path == "fast":
        start = time.perf_counter()
        datasets = [loader.dataset for loader in loaders]
        trainee, train_loaders = prepare_fast_path(
            model,
            [classified_sequences(d, settings.token_position) for d in datasets],  # type: ignore[arg-type]
            [d.labels for d in datasets],  # type: ignore[attr-defined]
            list(loaders),
            device,
            settings.precision,
            progress=progress,
        )
        prefix_seconds = time.perf_counter() - start
        log(f"Cached the frozen blocks' output for every message in {prefix_seconds:.1f} s")

    optimizer = make_optimizer(trainee, settings.lr, settings.weight_decay, device)
    torch.manual_seed(settings.seed)  # dropout, if any, draws from the global generator
    history = train_classifier_simple(
        trainee,
        train_loaders[0],
        train_loaders[1],
        optimizer,
        device,
        num_epochs=settings.epochs,
        eval_freq=settings.eval_freq,
        eval_iter=settings.eval_iter,
        precision=settings.precision,
        log=log,
    )
    trained = prefix_seconds + history.seconds
    log(
        f"Training completed in {trained / 60:.2f} minutes ({trained:.1f} s"
        + (
            f", of which {prefix_seconds:.1f} s caching the frozen blocks)"
            if path == "fast"
            else ")"
        )
    )

    trainee.eval()
    # The training loader drops its last partial batch (as the book's does); the final
    # accuracies count every example, in order.
    every_example = [in_order(loader) for loader in train_loaders]
    with autocast(device, settings.precision):
        accuracies = {
            split: calc_accuracy_loader(loader, trainee, device)
            for split, loader in zip(("train", "validation", "test"), every_example, strict=True)
        }
    recipe_seconds = time.perf_counter() - recipe_start
    log(
        "Accuracy on every example: "
        + " | ".join(
            f"{split} {value * 100:.2f}% of {len(loader.dataset):,}"  # type: ignore[arg-type]
            for (split, value), loader in zip(accuracies.items(), every_example, strict=True)
        )
    )
    info = ClassifierInfo(
        config=model.cfg,
        max_length=train_dataset.max_length,
        token_position=settings.token_position,
        model_preset=settings.model,
        weights=settings.weights,
        trainable_layers=settings.trainable_layers,
        # Training every layer leaves no base to share: such a checkpoint is full anyway.
        stored="full"
        if settings.full_checkpoint or settings.trainable_layers == "all"
        else "trained",
        base=base,
        extra={"settings": settings.to_dict()},
    )
    return TrainingResult(
        model=model.eval(),
        info=info,
        history=history,
        accuracies=accuracies,
        path=path,
        path_description=description,
        prefix_seconds=prefix_seconds,
        train_seconds=history.seconds,
        recipe_seconds=recipe_seconds,
        device=str(device),
        training_texts=train_dataset.data["Text"].tolist(),
    )


def in_order(loader: DataLoader) -> DataLoader:
    """A loader over the same examples as ``loader``, each once, in order, none dropped."""
    return DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn)


def describe_base(settings: TrainingSettings, model: GPTModel) -> BaseWeights:
    """The record of the weights training starts from, taken before it changes any."""
    if settings.weights == "pretrained":
        return describe_pretrained(
            settings.model, find_weights(settings.model, settings.weights_dir)
        )
    trained = trained_parameter_names(model, settings.trainable_layers)
    return describe_random(settings.model, settings.seed, model, trained)


def _cache_bytes(loaders: DataLoaders, settings: TrainingSettings, model: GPTModel) -> int:
    tokens = 0
    for loader in loaders:
        dataset: SpamDataset = loader.dataset  # type: ignore[assignment]
        if settings.token_position == "last":
            tokens += len(dataset) * dataset.max_length
        else:
            tokens += int(dataset.lengths.sum())
    return tokens * model.cfg.emb_dim * 4
