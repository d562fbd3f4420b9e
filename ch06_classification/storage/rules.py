"""What a value read from a JSON file may be, declared once beside the field it fills.

A field of a dataclass that is read back from JSON (a checkpoint's description) declares
its rule with ``checked``; ``entries`` walks an object against such rules: every entry
there, none unknown, each checked by its own rule, and a problem is one ``ValueError``
naming the entry (``config n_heads is 0, not a whole number >= 1``). The rules:
``one_of``, ``whole_number``, ``number_in``, ``boolean``, ``text``, ``text_equal``,
``matches``, ``mapping``, ``entries`` (an object of declared entries), ``optional`` (or
null), and ``rule`` for any other test.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ch06_classification.storage.printable import quoted

Check = Callable[[Any, str], None]  # (value, its name); raises ValueError naming it


def rule(test: Callable[[Any], bool], problem: str) -> Check:
    """A value that passes ``test``; else ``problem``, its ``{name}`` and ``{value}`` (quoted)
    filled in."""

    def check(value: Any, name: str) -> None:
        if not test(value):
            raise ValueError(problem.format(name=name, value=quoted(value)))

    return check


def is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # (True is an int)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def one_of(choices: Collection[str]) -> Check:
    choices = tuple(choices)  # (a list or a dict read from JSON is no key of a dict)
    return rule(lambda v: v in choices, "{name} is {value}, not one of " + ", ".join(choices))


def whole_number(least: int | None = None, problem: str | None = None) -> Check:
    """A whole number of at least ``least`` (any without one)."""
    what = "a whole number" + ("" if least is None else f" >= {least}")
    return rule(
        lambda v: is_whole_number(v) and (least is None or v >= least),
        problem or "{name} is {value}, not " + what,
    )


def number_in(low: float, high: float) -> Check:
    """A number from ``low`` to below ``high`` (not NaN, which JSON readers accept)."""
    return rule(
        lambda v: is_number(v) and low <= v < high, f"{{name}} {{value}} is outside [{low}, {high})"
    )


def boolean() -> Check:
    return rule(lambda v: isinstance(v, bool), "{name} is {value}, not true or false")


def text() -> Check:
    return rule(lambda v: isinstance(v, str), "{name} is {value}, not text")


def text_equal(expected: str) -> Check:
    return rule(lambda v: v == expected, f"{{name}} {{value}} is not {quoted(expected)}")


def matches(pattern: str, what: str) -> Check:
    """Text all of which ``pattern`` matches; ``what`` names such text."""
    return rule(
        lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None,
        f"{{name}} {{value}} is not {what}",
    )


def mapping() -> Check:
    """Any object."""
    return rule(lambda v: isinstance(v, dict), "{name} is not an object")


def optional(check: Check) -> Check:
    """``check``'s value, or null."""
    return lambda value, name: None if value is None else check(value, name)


def entries(rules: Mapping[str, Check], required: Collection[str] | None = None) -> Check:
    """An object of entries that ``rules`` names, each checked by its rule, with every one of
    ``required`` (all of them by default). Entries are named ``<object> <entry>``."""
    return lambda values, name: check_entries(values, rules, name, f"{name} ", required)


def check_entries(
    values: Any,
    rules: Mapping[str, Check],
    name: str,
    prefix: str = "",
    required: Collection[str] | None = None,
) -> None:
    """Check the object ``values`` (called ``name``) against ``rules``; see ``entries``."""
    if not isinstance(values, dict):
        raise ValueError(f"{name} is not an object")
    lacking = set(rules if required is None else required) - set(values)
    unknown = set(values) - set(rules)
    if lacking or unknown:
        problems = [f"lacks {quoted(sorted(lacking))}"] if lacking else []
        problems += [f"has unknown entries {quoted(sorted(unknown))}"] if unknown else []
        raise ValueError(
            f"{name} has entries {quoted(sorted(values))}: it {' and '.join(problems)}"
        )
    for key, value in values.items():
        rules[key](value, prefix + key)


def checked(check: Check, **default: Any) -> Any:
    """A dataclass field whose value, read from JSON, ``check`` validates (``default=`` or
    ``default_factory=`` as for ``dataclasses.field``)."""
    return dataclasses.field(metadata={"check": check}, **default)


def declared_rules(cls: type) -> dict[str, Check]:
    """The rule of each field of the dataclass ``cls``, every one of which declares one."""
    lacking = [f.name for f in dataclasses.fields(cls) if "check" not in f.metadata]
    if lacking:
        raise TypeError(f"{cls.__name__}'s fields {lacking} declare no rule (use checked)")
    return {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}
