"""The whole fine-tuning recipe in one call: data, model, training path, training, results.

``fine_tune(TrainingSettings())`` is the book's recipe (gpt2-small, last block trainable,
5 epochs, batch 8, AdamW lr 5e-5, weight decay 0.1, seed 123). The command line, the
benchmark and the notebooks all go through here, so they cannot drift apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch.utils.data import DataLoader

from ch06_classification.classifier import CLASS_NAMES
from ch06_classification.dataset import SpamDataset
from ch06_classification.evaluating.metrics import classification_metrics
from ch06_classification.finetuning.loaders import DataLoaders, create_data_loaders
from ch06_classification.finetuning.loop import (
    TrainingDivergedError,
    make_optimizer,
    train_classifier,
)
from ch06_classification.finetuning.model import (
    GPTClassifier,
    build_classifier,
    describe_trainable,
    first_trainable_block,
    needs_fixed_padding,
    trained_parameter_names,
)
from ch06_classification.finetuning.settings import TrainingSettings
from ch06_classification.sources.split_files import check_training_splits, read_class_names
from ch06_classification.speed.devices import autocast, pick_device, reuse_freed_memory
from ch06_classification.speed.distributed import current_world
from ch06_classification.speed.fast_path import (
    ClassifiedTokenClassifier,
    classified_sequences,
    fast_path_unavailable_reason,
    prepare_fast_path,
)
from ch06_classification.speed.precision import training_precision
from ch06_classification.storage.base_weights import (
    BaseWeights,
    describe_pretrained,
    describe_random,
)
from ch06_classification.storage.checkpoint import ClassifierInfo
from ch06_classification.storage.local_cache import cache_limit_bytes
from ch06_classification.storage.prefix_cache import PrefixCache
from ch06_classification.storage.printable import listed
from ch06_classification.storage.runs import TrainingResult
from gpt.errors import UserFacingError
from gpt.fast_attention import use_fast_attention
from gpt.hub import find_weights
from gpt.lora import lora_config
from gpt.model import GPTModel
from gpt.tokenizer import get_tokenizer


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


def check_batches(training_rows: int, batch_size: int, accumulation_steps: int) -> None:
    """Refuse batches that do not fit the training split: a batch larger than the split, or
    gradient accumulation over more batches than an epoch has.

    An epoch trains on whole batches only (the book's training loader drops the last
    partial one), so a larger batch would leave every epoch empty and save an untrained
    model; and an update that divides by more batches than it adds up is scaled down.
    """
    if batch_size > training_rows:
        raise UserFacingError(
            f"--batch-size {batch_size} is larger than the training split "
            f"({training_rows:,} messages): an epoch trains on whole batches only, so it would "
            f"train on nothing; use a --batch-size of at most {training_rows:,}"
        )
    batches = training_rows // batch_size
    if accumulation_steps > batches:
        raise UserFacingError(
            f"--accumulation-steps {accumulation_steps} is more than the {batches:,} batches "
            f"of an epoch ({training_rows:,} training messages, {batch_size} per batch): an "
            f"update would sum the gradients of {batches:,} batches, each scaled by "
            f"1/{accumulation_steps}; use at most {batches:,}"
        )


def fine_tune(
    settings: TrainingSettings, log: Callable[[str], None] = print, progress: bool = True
) -> TrainingResult:
    """Train a spam classifier as ``settings`` say; print progress through ``log`` (and a
    progress bar on stderr while the frozen blocks are cached, unless ``progress=False``).

    Under torchrun (see distributed.py), once ``training_processes`` has joined the
    processes, each trains on its piece of every batch and only rank 0 prints; every
    process returns the same result.

    Precision ``auto`` becomes float32 or bfloat16 here, for this device
    (``precision.training_precision``), and the result's settings record the one used.
    Settings that cannot train (a NaN, batches that do not fit the training split) are a
    ``UserFacingError`` before the model is built; a loss or final outputs that become NaN
    or infinite, a ``TrainingDivergedError``.
    """
    settings.check()
    # How much the kept outputs of the frozen blocks may take ($GPT_SPAM_CACHE_GIB, read
    # now so that a mistyped value stops the run before the work): None, --no-cache.
    cache_limit = None if settings.no_cache else cache_limit_bytes()
    world = current_world()  # this process alone, unless torchrun started several
    if not world.is_main:
        log, progress = (lambda line: None), False
    # Bad data, or batches that do not fit it, fail now, not after loading GPT-2.
    training_rows = check_training_splits(settings.data_dir)
    class_names = read_class_names(settings.data_dir)  # the head has one output per class
    world.check_batch_size(settings.batch_size, settings.no_padding)
    check_batches(
        training_rows,
        1 if settings.no_padding else settings.batch_size,
        settings.accumulation_steps,
    )
    reuse_freed_memory()  # every step allocates the same tensors: keep their pages warm
    device = world.device or pick_device(settings.device)
    # "auto" is decided once, here: the run records the precision it trained in.
    precision = training_precision(settings.precision, device)
    settings = replace(settings, precision=precision.precision)
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
    if settings.precision == "bf16":
        use_fast_attention(model)  # faster on a CPU in bfloat16; the same elsewhere
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
    log(f"Precision: {precision.describe()}")

    model.to(device)
    recipe_start = time.perf_counter()
    prefix_seconds = 0.0
    kept = PrefixCache(world.encode_prefix, base, cache_limit, world, log)
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
            # Loaded if an earlier run kept it; else computed (the work shared by the
            # processes, if several) and kept for the next run.
            encode=kept,
        )
        prefix_seconds = time.perf_counter() - start
        log(kept.describe(prefix_seconds))

    optimizer = make_optimizer(trainee, settings.lr, settings.weight_decay, device)
    # Dropout, if any, draws from the global generator (each process its own masks).
    torch.manual_seed(settings.seed + world.rank)
    history = train_classifier(
        world.wrap(trainee),  # with several processes, in DDP, on their pieces of each batch
        world.shard(train_loaders[0], training=True),
        world.shard(train_loaders[1]),
        optimizer,
        settings,
        device=device,
        world=world if world.distributed else None,
        log=log,
    )
    trained = prefix_seconds + history.seconds
    log(
        f"Training completed in {trained / 60:.2f} minutes ({trained:.1f} s"
        + (
            f", of which {prefix_seconds:.1f} s "
            f"{'loading' if kept.loaded else 'computing'} the frozen blocks' output)"
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
        check_finite_outputs(logits, split, settings.lr)
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


SPLIT_WORDS = {"train": "training"}  # a split's name in a sentence, where it differs


def check_finite_outputs(logits: torch.Tensor, split: str, lr: float) -> None:
    """Refuse a trained model whose outputs are NaN or infinite. Training stops on such a
    loss at the step after the update that caused it; the last update, which no step
    follows, shows here."""
    rows = int((~torch.isfinite(logits)).any(dim=-1).sum())
    if rows:
        raise TrainingDivergedError(
            f"the trained model's outputs are NaN or infinite for {rows:,} of the "
            f"{len(logits):,} {SPLIT_WORDS.get(split, split)} messages, so nothing was "
            "saved: the learning rate "
            f"{lr:g} is likely too high"
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
