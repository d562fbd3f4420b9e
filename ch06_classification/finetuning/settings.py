"""``TrainingSettings``: every knob of the fine-tuning recipe, with the book's values.

Each knob is declared once, here: its default, and how it is given on the command line
(its help, its choices or the range of its numbers). ``gpt-spam train``'s options are built
from these declarations (``cli/options.py``), ``TrainingSettings.check`` applies the same
ranges to settings made in Python, and the experiment rows name their knobs by field
(``extras/experiments.py``). ``ch06_classification.finetuning.finetune`` runs the recipe
these settings describe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ch06_classification.classifier import TOKEN_POSITIONS
from ch06_classification.storage.local_cache import CACHE_DIR_ENV, DEFAULT_LIMIT_GIB, LIMIT_ENV
from gpt.errors import UserFacingError

# What is fine-tuned (the book's bonus experiments); everything else stays frozen.
# "lora" trains low-rank adapters beside every linear layer instead (appendix E).
TRAINABLE_LAYERS = ("last_layer", "last_block", "last_two_blocks", "all", "lora")
PRECISIONS = ("fp32", "bf16", "auto")  # the order every step lists them in
FAST_PATHS = ("auto", "on", "off")

# The ranges a knob's number may take: (type, what it must be, the check).
RANGES: dict[str, tuple[type, str, Callable[[Any], bool]]] = {
    "count": (int, "a whole number of at least 1", lambda n: n >= 1),
    "positive": (float, "a number greater than 0", lambda x: x > 0),
    "non_negative": (float, "a number of at least 0", lambda x: x >= 0),
    "dropout": (float, "a number from 0 to below 1", lambda x: 0 <= x < 1),
}


@dataclass(frozen=True)
class Knob:
    """How a setting is given on the command line: ``--<name-with-dashes>``."""

    help: str
    choices: tuple[str, ...] | None = None
    range: str | None = None  # a key of RANGES
    metavar: str | None = None


def knob(default: Any, help: str, **how: Any) -> Any:
    """A field of ``TrainingSettings`` that is one of ``train``'s options."""
    return field(default=default, metadata={"knob": Knob(help, **how)})


@dataclass
class TrainingSettings:
    """Every knob of the recipe, with the book's values as defaults.

    ``model``, ``weights``, ``weights_dir``, ``data_dir``, ``seed``, ``device`` and
    ``full_checkpoint`` are options that more steps share (``cli/options.py``); the others
    are ``train``'s own, declared here with their help.
    """

    model: str = "gpt2-small"
    weights: str = "pretrained"  # or "random": same shapes, GPT-2's random initialisation
    weights_dir: str | None = None  # local OpenAI weights instead of downloading them
    trainable_layers: str = knob(
        "last_block",
        "what is fine-tuned; everything else stays frozen: the new head only (last_layer), "
        "the last block(s) with the final norm and head, every layer (all), or LoRA "
        "adapters beside every linear layer (lora)",
        choices=TRAINABLE_LAYERS,
    )
    lora_rank: int = knob(
        16, "rank of the LoRA adapters, with --trainable-layers lora", range="count"
    )
    lora_alpha: float = knob(
        16,
        "LoRA's update is scaled by alpha / rank (alpha above 0), as in the book's appendix E "
        "(the book's chapter-6 bonus script scales by alpha alone: its alpha 16 at rank 16 is "
        "alpha 256 here)",
        range="positive",
    )
    token_position: str = knob(
        "flexible",
        "which token's output is classified: the last real token (flexible), the last "
        "position of the padded row (last, the book's), or the first",
        choices=TOKEN_POSITIONS,
    )
    average_embeddings: bool = knob(
        False,
        "classify the average of the outputs over every position instead of one token; as "
        "in the book's bonus experiment, padding is included: every message is padded to the "
        "same length, so each is averaged over the same positions whatever else is in its "
        "batch (--token-position is then ignored)",
    )
    disable_causal_mask: bool = knob(
        False,
        "let every token attend to every other one, later ones and padding included "
        "(messages are then padded to the same length)",
    )
    no_padding: bool = knob(
        False, "each message at its own length, one message per batch (batch size 1)"
    )
    context_length: str | int = knob(
        "longest",
        "cut messages to the longest training message, the model's full context (1,024 "
        "tokens), or N tokens",
        range="context_length",
        metavar="{longest,model,N}",
    )
    drop_rate: float = knob(
        0.0, "dropout probability in the model, from 0 to below 1", range="dropout"
    )
    epochs: int = knob(5, "passes over the training split", range="count")
    batch_size: int = knob(
        8,
        "training messages per batch; a batch larger than the training split is refused, "
        "since an epoch trains on whole batches only, as in the book",
        range="count",
    )
    accumulation_steps: int = knob(
        1,
        "sum the gradients of N batches (each loss scaled by 1/N) before the optimizer "
        "steps, and after the last batch of an epoch; more than an epoch's batches is refused",
        range="count",
        metavar="N",
    )
    lr: float = knob(5e-5, "AdamW learning rate, above 0", range="positive")
    weight_decay: float = knob(0.1, "AdamW weight decay, 0 or more", range="non_negative")
    eval_freq: int = knob(50, "evaluate the loss every N steps", range="count")
    eval_iter: int = knob(
        5, "batches per periodic evaluation and per-epoch accuracy", range="count"
    )
    seed: int = 123
    device: str = "auto"
    precision: str = knob(
        "auto",
        "compute the matrix multiplications in float32 or bfloat16 (autocast; weights, "
        "gradients and optimizer state stay float32); auto: bfloat16 where the CPU or GPU "
        "has native bfloat16 matrix units (Intel AMX, AVX-512 BF16, Arm BF16; NVIDIA from "
        "Ampere on), else float32, and training says which; elsewhere bfloat16 is emulated, "
        "slower than float32",
        choices=PRECISIONS,
    )
    fast_path: str = knob(
        "auto",
        "cache the frozen blocks and compute only the classified token (on), train the "
        "book's way, every message padded to the same length and every block run on every "
        "step (off), or use the fast path where it is exact (auto)",
        choices=FAST_PATHS,
    )
    no_cache: bool = knob(
        False,
        "compute the frozen blocks' output again and keep nothing. By default the fast path "
        f"keeps it in ~/.cache/gpt-spam (${CACHE_DIR_ENV}), and a later run with the same "
        "base weights, model, data and settings loads it instead of computing it; the kept "
        f"outputs take at most {DEFAULT_LIMIT_GIB} GiB (${LIMIT_ENV}), the least recently "
        "used dropped first (gpt-spam cache --list shows them)",
    )
    data_dir: str = "data"
    # Store every tensor instead of only the trained ones plus a record of the base weights.
    full_checkpoint: bool = False
    # Changes to the model's shape, e.g. a tiny random model for tests and CI.
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> TrainingSettings:
        """The settings that ``values`` (parsed options, ``vars(args)``) give: every field
        found there, by name; the defaults for the rest."""
        found = {f.name: values[f.name] for f in fields(cls) if values.get(f.name) is not None}
        if "data_dir" in found:
            found["data_dir"] = str(found["data_dir"])
        return cls(**found)

    def check(self) -> None:
        """Refuse a value its knob's declaration does not allow (the command line's options
        refuse them when parsed): a NaN ``lora_alpha`` or ``lr`` trains on a NaN loss."""
        for name, value in vars(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UserFacingError(
                    f"TrainingSettings.{name} is {value}: it must be a finite number"
                )
        for name, declared in knobs().items():
            problem = knob_problem(declared, getattr(self, name))
            if problem:
                raise UserFacingError(
                    f"TrainingSettings.{name} is {getattr(self, name)!r}: {problem}"
                )


def knobs() -> dict[str, Knob]:
    """``train``'s own options, by field name, in the order declared."""
    return {f.name: f.metadata["knob"] for f in fields(TrainingSettings) if "knob" in f.metadata}


def knob_problem(declared: Knob, value: Any) -> str | None:
    """Why ``value`` is not one the knob allows (None if it is)."""
    if declared.choices is not None and value not in declared.choices:
        return f"expected one of {', '.join(declared.choices)}"
    if declared.range == "context_length":
        if value in ("longest", "model"):
            return None
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "use 'longest', 'model' or a number of tokens of at least 1"
    if declared.range is not None:
        kind, expected, accepts = RANGES[declared.range]
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int:
            number_ok = number_ok and float(value).is_integer()
        if not (number_ok and math.isfinite(value) and accepts(value)):
            return f"expected {expected}"
    return None


def parse_knob(declared: Knob, text: str) -> Any:
    """A knob's value from the command line's text; ``ValueError`` saying what was expected."""
    if declared.range == "context_length" and text in ("longest", "model"):
        return text
    kind = int if declared.range in ("count", "context_length") else float
    try:
        value = kind(text)
    except ValueError:
        value = None
    problem = "unreadable" if value is None else knob_problem(declared, value)
    if problem:
        expected = knob_problem(declared, None) or problem
        raise ValueError(f"{expected}, not {text!r}")
    return value


def settings_from_arguments(
    arguments: list[str], base: TrainingSettings | None = None
) -> TrainingSettings:
    """``base`` (default: the book's recipe) changed by ``train``'s command-line arguments,
    e.g. ``["--trainable-layers", "all", "--no-padding"]``: how an experiment row's command
    becomes its settings, read by the same declarations the command line is built from."""
    declared = {f.name: f for f in fields(TrainingSettings) if f.name != "config_overrides"}
    values = (base or TrainingSettings()).to_dict()
    words = iter(arguments)
    for word in words:
        name = word.removeprefix("--").replace("-", "_")
        if not word.startswith("--") or name not in declared:
            raise ValueError(f"{word!r} is not an option of `gpt-spam train`")
        default = declared[name].default
        if isinstance(default, bool):
            values[name] = True
            continue
        text = next(words, None)
        if text is None:
            raise ValueError(f"{word} needs a value")
        knob_declared = declared[name].metadata.get("knob")
        if knob_declared is not None and knob_declared.range is not None:
            values[name] = parse_knob(knob_declared, text)
        else:
            values[name] = type(default)(text) if isinstance(default, int) else text
        if knob_declared is not None and knob_problem(knob_declared, values[name]):
            raise ValueError(f"{word} {text}: {knob_problem(knob_declared, values[name])}")
    return TrainingSettings(**values)
