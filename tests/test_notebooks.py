"""The notebooks: committed clean, holding no package code, and running top to bottom.

Every notebook in ``notebooks/`` is executed with ``nbclient`` in CI mode
(``GPT_SPAM_NOTEBOOK_MODE=ci``: a tiny GPT-2 with random weights, one epoch, the dataset from
``SMS_SPAM_SOURCE``, every file in a temporary folder, an empty home and no tokenizer
cache), so the notebooks cannot drift away from the package they import. Together they
take about a minute on two cores.
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest

from tests.sms_data import SMS_SPAM_ZIP

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = ["ch06_exercises", "ch06_main", "ch06_pitfalls", "ch06_solutions"]
PACKAGES = ("gpt", "ch06_classification")

# A notebook may define a tiny helper (a line or three); anything longer is logic that
# belongs in the package, where it is tested, not in a notebook.
MAX_DEFINITION_LINES = 3
CELL_TIMEOUT_S = 300


def read(path: Path):
    return nbformat.read(path, as_version=4)


def code_cells(path: Path) -> list:
    return [cell for cell in read(path).cells if cell.cell_type == "code"]


def python_source(cell) -> str:
    """A code cell's source without IPython-only lines (magics and shell escapes)."""
    lines = cell.source.splitlines()
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def package_names() -> set[str]:
    """Every function and class defined at the top level of the package's modules."""
    names = set()
    for package in PACKAGES:
        for module in (ROOT / package).rglob("*.py"):
            tree = ast.parse(module.read_text(encoding="utf-8"))
            names |= {
                node.name
                for node in tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            }
    return names


def ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


def test_the_chapter_notebooks_are_there():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_committed_without_outputs(path: Path):
    """Outputs and execution counts make every diff unreadable: commit notebooks clean."""
    notebook = read(path)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        where = f"{path.name}, cell {index}"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{where} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{where} has an execution count"
        assert "execution" not in cell.metadata, f"{where} has execution timing metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_first_code_cell_is_the_parameters_cell(path: Path):
    first = code_cells(path)[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: tag it 'parameters'"
    assert "GPT_SPAM_NOTEBOOK_MODE" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_no_package_code_in_notebooks(path: Path):
    """Notebooks import the package; they do not define (or redefine) its functions."""
    ours = package_names()
    for index, cell in enumerate(code_cells(path)):
        tree = ast.parse(python_source(cell), filename=f"{path.name}, cell {index}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            where = f"{path.name}, cell {index}: {node.name}"
            assert node.name not in ours, f"{where} redefines a function of the package"
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_DEFINITION_LINES, f"{where}: {lines} lines, move it to the package"


def test_exercise_cells_are_left_to_the_reader():
    exercises = NOTEBOOKS_DIR / "ch06_exercises.ipynb"
    solutions = NOTEBOOKS_DIR / "ch06_solutions.ipynb"
    tasks = [cell for cell in code_cells(exercises) if "# your code here" in cell.source]
    assert len(tasks) >= 4
    assert not any("# your code here" in cell.source for cell in code_cells(solutions))


def snapshot(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.exists() else set()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_in_ci_mode(path: Path, tmp_path: Path):
    nbclient = pytest.importorskip("nbclient")
    source = SMS_SPAM_ZIP
    if not source.is_file():
        pytest.skip(f"the real SMS Spam Collection is not at {source}: set SMS_SPAM_SOURCE")
    home = tmp_path / "home"  # nothing cached there: no tokenizer files, no weights
    home.mkdir()

    env = {
        **os.environ,
        "GPT_SPAM_NOTEBOOK_MODE": "ci",
        "SMS_SPAM_SOURCE": str(source),
        # The kernel imports the package from this checkout, installed or not.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # CI mode writes its data and runs to a temporary folder: let it be this test's.
        "TMPDIR": str(tmp_path),
        # The tiny model gains nothing from threads, and on a busy machine two threads
        # per process slow it down many times over.
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HOME": str(home),
    }
    for name in ("GPT2_WEIGHTS_DIR", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "HF_HOME"):
        env.pop(name, None)

    watched = [ROOT / "data", ROOT / "runs", NOTEBOOKS_DIR]
    before = [snapshot(folder) for folder in watched]
    notebook = read(path)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # run from notebooks/
    )
    start = time.perf_counter()
    client.execute(env=env)
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")

    for folder, files in zip(watched, before, strict=True):
        added = sorted(str(p.relative_to(ROOT)) for p in snapshot(folder) - files)
        assert not added, f"{path.name} wrote into the repository in CI mode: {added}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_no_path_outside_the_repository(path: Path):
    """The dataset comes through SMS_SPAM_SOURCE, as for the commands: no ../shared."""
    for index, cell in enumerate(code_cells(path)):
        assert "shared" not in cell.source, f"{path.name}, cell {index}"
        assert "ROOT.parent" not in cell.source, f"{path.name}, cell {index}"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("real", ("pretrained", 5, {})),
        ("offline", ("random", 5, {})),  # full size, nothing to download
        ("ci", ("random", 1, {"emb_dim": 64, "n_layers": 2, "n_heads": 4})),
    ],
)
def test_the_parameters_of_each_mode(mode: str, expected: tuple, monkeypatch, tmp_path):
    monkeypatch.setenv("GPT_SPAM_NOTEBOOK_MODE", mode)
    monkeypatch.setenv("SMS_SPAM_SOURCE", "sms_spam_collection.zip")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # CI mode makes its work folder there
    monkeypatch.chdir(NOTEBOOKS_DIR)
    for path in NOTEBOOKS:
        values: dict = {}
        exec(code_cells(path)[0].source, values)  # the parameters cell alone
        got = (values["WEIGHTS"], values["EPOCHS"], values["CONFIG_OVERRIDES"])
        assert (values["MODEL"], *got) == ("gpt2-small", *expected), path.name
        assert values["SMS_SOURCE"] == "sms_spam_collection.zip"
