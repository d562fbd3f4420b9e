"""The training curves of section 6.7: loss and accuracy against epochs and examples seen.

The figure is made with ``Figure`` directly rather than ``pyplot``: no GUI backend, no
global state and no figure left open, so it works the same on a headless server, in CI and
in a notebook (where a returned ``Figure`` shows itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


def values_figure(
    epochs_seen: ArrayLike,
    examples_seen: ArrayLike,
    train_values: ArrayLike,
    val_values: ArrayLike,
    label: str = "loss",
) -> Figure:
    """Training and validation ``label`` against epochs (bottom axis) and examples seen (top
    axis), as the book's ``plot_values`` draws them.
    """
    epochs, examples, train, val = (
        np.asarray(values, dtype=np.float64)
        for values in (epochs_seen, examples_seen, train_values, val_values)
    )
    if not epochs.shape == examples.shape == train.shape == val.shape:
        raise ValueError(
            "epochs_seen, examples_seen, train_values and val_values must have the same "
            f"length, got {epochs.shape}, {examples.shape}, {train.shape} and {val.shape}"
        )
    fig = Figure(figsize=(5, 3.3), layout="constrained")
    ax1 = fig.subplots()

    # Plot training and validation values against epochs. Markers show every measured
    # point: one epoch gives one point, which a line alone would not draw at all.
    ax1.plot(epochs, train, marker="o", markersize=3, label=f"Training {label}")
    ax1.plot(epochs, val, marker="s", markersize=3, linestyle="-.", label=f"Validation {label}")
    fig.suptitle(f"Training and validation {label}")  # above the top axis's label
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(label.capitalize())
    ax1.legend()

    # Create a second x-axis for examples seen: the same values plotted invisibly, so both
    # axes autoscale over the same points and their ticks line up.
    ax2 = ax1.twiny()
    ax2.plot(examples, train, alpha=0)
    ax2.set_xlabel("Examples seen")
    return fig


def plot_values(
    epochs_seen: ArrayLike,
    examples_seen: ArrayLike,
    train_values: ArrayLike,
    val_values: ArrayLike,
    label: str = "loss",
    out_dir: str | Path = ".",
    name: str | None = None,
) -> list[Path]:
    """The book's ``plot_values``: the curves of ``label`` saved as ``<label>-plot.pdf``, as
    the book names it, with a png beside it for screens. Returns the two paths (png first).

    ``out_dir`` (default: the working directory, as in the book) and ``name`` (default
    ``<label>-plot``) say where.
    """
    fig = values_figure(epochs_seen, examples_seen, train_values, val_values, label)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name or f'{label}-plot'}.{suffix}" for suffix in ("png", "pdf")]
    for path in paths:
        fig.savefig(path)
    return paths
