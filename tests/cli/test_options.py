"""The shape of the code: which package may import which, and options declared once."""

from __future__ import annotations

import argparse
import ast
import re
from collections import defaultdict
from pathlib import Path

from tests.run_cli import ROOT

PACKAGES = ("gpt", "ch06_classification")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, at the top or inside a function (a package
    counts as imported with any of its modules, as Python runs its ``__init__``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # imports for type checkers only are not run
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "ch06_classification.cli.running" in graph["ch06_classification.cli.main"]
    assert "gpt.model" in graph["ch06_classification.classifier"]


def test_no_import_cycles():
    graph = import_graph()
    cycles = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in done:
                visit(imported, [*path, imported], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], done)
    assert cycles == []


def test_gpt_never_imports_the_chapter():
    graph = import_graph()
    assert {
        module: sorted(m for m in imported if m.startswith("ch06_classification"))
        for module, imported in graph.items()
        if module.startswith("gpt") and any(m.startswith("ch06") for m in imported)
    } == {}


# The web framework of `gpt-spam serve`: an extra, imported by its subpackage only.
WEB_PACKAGES = ("fastapi", "uvicorn", "starlette")


def test_only_the_serve_subpackage_imports_the_web_framework_and_it_never_imports_cli():
    serve = "ch06_classification.serve"
    web_importers = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):  # imports for type checkers only are not run
                if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                    node.body = []
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(name.split(".")[0] in WEB_PACKAGES for name in names):
                    web_importers.add(module_name(path))
    assert web_importers and all(m.startswith(serve) for m in web_importers), web_importers
    graph = import_graph()
    assert {
        module: sorted(m for m in imported if m.startswith("ch06_classification.cli"))
        for module, imported in graph.items()
        if module.startswith(serve)
        and any(m.startswith("ch06_classification.cli") for m in imported)
    } == {}


# Options that mean something else in these steps, on purpose.
DIFFERENT_MEANING = {
    # messages per training batch vs per classified batch
    ("--batch-size", "classify"): "default",
    ("--batch-size", "evaluate"): "default",
    ("--batch-size", "serve"): "default",
    # the token every experiment row reads: the book's, by default, to compare with its table
    ("--token-position", "experiments"): "choices and default",
    # each step's own output folder
    ("--out-dir", "experiments"): "default",
}


def test_an_option_shared_by_steps_means_the_same_in_each():
    from ch06_classification.cli.main import build_parser

    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    by_flag: dict[str, dict[str, argparse.Action]] = defaultdict(dict)
    for step, parser in subparsers.choices.items():
        for action in parser._actions:
            for flag in action.option_strings:
                by_flag[flag][step] = action
    shared = {flag: steps for flag, steps in by_flag.items() if len(steps) > 1}
    assert {"--run-dir", "--precision", "--weights-dir", "--device"} <= set(shared)
    for flag, steps in shared.items():
        kept = {s: a for s, a in steps.items() if (flag, s) not in DIFFERENT_MEANING}
        described = {
            (a.dest, a.type, tuple(a.choices or ()), str(a.default), a.nargs, type(a).__name__)
            for a in kept.values()
        }
        assert len(described) == 1, f"{flag} differs between {sorted(kept)}: {described}"


# Words of a command line: an option (--weights-dir), the words themselves, the command.
CLI_WORDS = re.compile(r"--[a-z]|command[ -]line|\bCLI\b|\bargparse\b|gpt-spam", re.IGNORECASE)


def test_gpt_has_no_word_of_the_command_line():
    """gpt/ is GPT-2 for any program: how a command spells an option is the command's affair."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "gpt").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if CLI_WORDS.search(line)
    ]
    assert found == []


def test_the_cli_word_check_finds_cli_words():
    lines = [
        "pass --weights-dir FOLDER",
        "# The command-line entry points",
        "the CLI",
        "x = a - -b",
    ]
    assert [bool(CLI_WORDS.search(line)) for line in lines] == [True, True, True, False]
