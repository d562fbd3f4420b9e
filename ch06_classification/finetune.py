"""The whole fine-tuning recipe in one call: data, model, training path, training, results.

``fine_tune(TrainingSettings())`` is the book's recipe (gpt2-small, last block trainable,
5 epochs, batch 8, AdamW lr 5e-5, weight decay 0.1, seed 123). The command line, the
benchmark and the notebooks all go through here, so they cannot drift apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    needs_fixed_padding,
    trained_parameter_names,
)
from ch06_classification.datafiles import CLASS_NAMES
from ch06_classification.dataset import DataLoaders, SpamDataset, create_data_loaders
from ch06_classification.devices import autocast, pick_device, reuse_freed_memory
from ch06_classification.distributed import current_world
from ch06_classification.fast_path import (
    ClassifiedTokenClassifier,
    classified_sequences,
    fast_path_unavailable_reason,
    prepare_fast_path,
)
from ch06_classification.metrics import classification_metrics
from ch06_classification.printable import listed
from ch06_classification.settings import TrainingSettings
from ch06_classification.splits import check_training_splits, read_class_names
from ch06_classification.training import (
    TrainingHistory,
    make_optimizer,
    train_classifier_simple,
)
from gpt.errors import UserFacingError
from gpt.lora import lora_config
from gpt.model import GPTModel
from gpt.tokenizer import get_tokenizer
from gpt.weights import find_weights


def fast_path_cache_limit() -> int:
    """How many bytes of cached hidden states the fast path may hold: a third of this
    machine's memory (2 GiB where that cannot be read). Past it (the `last` token over
    1,024 padded positions on a small machine, say), the frozen blocks are recomputed on
    every step instead: slower, but it fits."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 2 * 1024**3
    return max(2 * 1024**3, memory // 3)


@dataclass
class TrainingResult:
    model: GPTModel
    info: ClassifierInfo
    history: TrainingHistory
    accuracies: dict[str, float]  # on every example of each split
    # classification_metrics of each split (F1, precision, ...; per class for N > 2)
    metrics: dict[str, dict[str, Any]]
    path: str  # "fast", "full" or "book": see choose_path
    path_description: str
    prefix_seconds: float  # caching the frozen blocks (fast path only)
    train_seconds: float
    # From data and model ready to final accuracies: prefix cache, training, evaluation.
    recipe_seconds: float
    device: str
    processes: int = 1  # how many processes trained it together (torchrun; DDP)
    # The exact texts it was trained on: evaluation calls a test message "unseen" only
    # if it is not one of them, whatever data folder is evaluated later.
    training_texts: list[str] = field(default_factory=list)


def choose_path(settings: TrainingSettings, model: GPTModel) -> tuple[str, str]:
    """Which training path runs, and a sentence saying why.

    - ``book``: the book's way: every message padded to ``max_length``, the whole model
      run on every step (``fast_path="off"``);
    - ``full``: the whole model run on every step, each batch padded only to its longest
      message (where the fast path would not be exact, or would not fit in memory);
    - ``fast``: the frozen blocks computed once and cached, the trainable rest run at the
      classified token only (``fast_path.py``); the same numbers as ``full``.
    """
    reason = fast_path_unavailable_reason(model)
    if settings.fast_path == "off":
        return "book", "the book's way: padded to max_length, every block on every step"
    if reason is not None:
        if settings.fast_path == "on":
            raise UserFacingError(f"--fast-path on is not possible here: {reason}")
        return "full", f"every trainable block on every step, because {reason}"
    k = first_trainable_block(model)
    if k == 0:
        frozen = "the embeddings (every block has trainable parameters)"
    else:
        frozen = f"blocks 0-{k - 1}" if k > 1 else "block 0"
    if settings.average_embeddings:
        rest = "the rest trained at every position (their outputs are averaged)"
    else:
        rest = "the rest trained at the classified token only"
    read = {
        "flexible": "each message up to its last real token",
        "last": "each padded row (its last position is classified)",
        "first": "each message's first token only (under the causal mask it sees nothing else)",
    }[settings.token_position]
    if settings.disable_causal_mask or settings.average_embeddings:
        read = "each whole padded row"
    return "fast", f"{frozen} computed once for {read} and cached, {rest}"


def classified_token_only(settings: TrainingSettings, model: GPTModel) -> bool:
    """Whether the ``full`` path can run the last block at the classified token only
    (``ClassifiedTokenClassifier``): without dropout, and with one token read."""
    return model.cfg.drop_rate == 0 and not settings.average_embeddings


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


def fine_tune(
    settings: TrainingSettings, log: Callable[[str], None] = print, progress: bool = True
) -> TrainingResult:
    """Train a spam classifier as ``settings`` say; print progress through ``log`` (and a
    progress bar on stderr while the frozen blocks are cached, unless ``progress=False``).

    Under torchrun (see distributed.py), once ``training_processes`` has joined the
    processes, each trains on its piece of every batch and only rank 0 prints; every
    process returns the same result.
    """
    world = current_world()  # this process alone, unless torchrun started several
    if not world.is_main:
        log, progress = (lambda line: None), False
    check_training_splits(settings.data_dir)  # bad data fails now, not after loading GPT-2
    class_names = read_class_names(settings.data_dir)  # the head has one output per class
    world.check_batch_size(settings.batch_size, settings.no_padding)
    reuse_freed_memory()  # every step allocates the same tensors: keep their pages warm
    device = world.device or pick_device(settings.device)
    tokenizer = get_tokenizer()
    overrides = dict(settings.config_overrides)
    if settings.disable_causal_mask:
        overrides["causal"] = False
    model = build_classifier(
        settings.model,
        settings.weights,
        settings.trainable_layers,
        weights_dir=settings.weights_dir,
        labels=class_names,
        seed=settings.seed,
        lora_rank=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        drop_rate=settings.drop_rate,
        **overrides,
    )
    if class_names != CLASS_NAMES:
        log(f"Classes: {len(class_names)} ({listed(class_names)}), from {settings.data_dir}")
    log(describe_trainable(model))
    base = describe_base(settings, model)
    if settings.no_padding:
        # One message per batch, at its own length: nothing is padded, so the last position
        # is the last real token, and the classifier is saved as reading that one.
        last = settings.token_position == "last"
        settings = replace(
            settings, batch_size=1, token_position="flexible" if last else settings.token_position
        )
        log("No padding: every message at its own length, one message per batch")
    token_position, batch_size = settings.token_position, settings.batch_size
    if world.distributed:
        log(world.describe(batch_size))

    path, description = choose_path(settings, model)
    # The book pads every message to the same length (see needs_fixed_padding for when
    # that matters). Otherwise a batch is padded only to its longest message.
    fixed = not settings.no_padding and (
        path == "book"
        or needs_fixed_padding(token_position, model.cfg.causal, settings.average_embeddings)
    )
    loaders = create_data_loaders(
        settings.data_dir,
        tokenizer,
        batch_size=batch_size,
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
    limit = fast_path_cache_limit()
    if (
        path == "fast"
        and (needed := _cache_bytes(loaders, token_position, settings, model)) > limit
    ):
        gib = 1024**3
        too_much = f"{needed / gib:.1f} GiB of cached hidden states, over {limit / gib:.1f} GiB"
        if settings.fast_path == "on":
            raise UserFacingError(f"--fast-path on would need {too_much}")
        path, description = "full", f"the fast path would need {too_much}"
    at_classified_token = path == "full" and classified_token_only(settings, model)
    if at_classified_token:
        description += "; the last block at the classified token only"
    log(f"Training path: {path} ({description})")

    model.to(device)
    recipe_start = time.perf_counter()
    prefix_seconds = 0.0
    trainee: torch.nn.Module
    if at_classified_token:
        trainee = ClassifiedTokenClassifier(model, token_position)
    else:
        trainee = GPTClassifier(model, token_position, settings.average_embeddings)
    train_loaders: list[DataLoader] = list(loaders)
    if path == "fast":
        start = time.perf_counter()
        trainee, train_loaders = prepare_fast_path(
            model,
            list(loaders),
            device,
            settings.precision,
            token_position,
            settings.average_embeddings,
            progress=progress,
            encode=world.encode_prefix,  # the work shared by the processes, if several
        )
        prefix_seconds = time.perf_counter() - start
        log(f"Cached the frozen blocks' output for every message in {prefix_seconds:.1f} s")

    optimizer = make_optimizer(trainee, settings.lr, settings.weight_decay, device)
    # Dropout, if any, draws from the global generator (each process its own masks).
    torch.manual_seed(settings.seed + world.rank)
    history = train_classifier_simple(
        world.wrap(trainee),  # with several processes, in DDP, on their pieces of each batch
        world.shard(train_loaders[0], training=True),
        world.shard(train_loaders[1]),
        optimizer,
        device,
        num_epochs=settings.epochs,
        eval_freq=settings.eval_freq,
        eval_iter=settings.eval_iter,
        precision=settings.precision,
        log=log,
        accumulation_steps=settings.accumulation_steps,
        world=world if world.distributed else None,
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
    accuracies, metrics = {}, {}
    for split, loader in zip(("train", "validation", "test"), every_example, strict=True):
        with autocast(device, settings.precision):
            logits, labels = world.collect_logits(loader, trainee, device)
        # calc_accuracy_loader's count, from the same pass that gives the other metrics
        accuracies[split] = (logits.argmax(dim=-1) == labels).sum().item() / len(labels)
        probabilities = torch.softmax(logits.float(), dim=-1).numpy()
        metrics[split] = classification_metrics(
            labels.numpy(), probabilities, class_names
        ).to_dict()
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
        token_position=token_position,
        labels=class_names,
        model_preset=settings.model,
        weights=settings.weights,
        trainable_layers=settings.trainable_layers,
        average_embeddings=settings.average_embeddings,
        lora=lora_config(model),
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
        metrics=metrics,
        path=path,
        path_description=description,
        prefix_seconds=prefix_seconds,
        train_seconds=history.seconds,
        recipe_seconds=recipe_seconds,
        device=str(device),
        processes=world.size,
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


def _cache_bytes(
    loaders: DataLoaders, token_position: str, settings: TrainingSettings, model: GPTModel
) -> int:
    tokens = 0
    for loader in loaders:
        dataset: SpamDataset = loader.dataset  # type: ignore[assignment]
        sequences = classified_sequences(
            dataset, token_position, model.cfg.causal, settings.average_embeddings
        )
        tokens += sum(len(sequence) for sequence in sequences)
    return tokens * model.cfg.emb_dim * (2 if settings.precision == "bf16" else 4)
