"""Plots of a run's metrics, rendered off-screen (matplotlib's Agg backend) as PIL images."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from PIL import Image


def loss_curves(
    histories: Mapping[str, Sequence[tuple[int, float]]], ylabel: str = "loss"
) -> Image.Image | None:
    """Every metric's (step, value) points, in the order given, against the step: one line per
    metric (sorted by name), as a 600x350 PNG image; None when there is nothing to plot."""
    curves = {k: v for k, v in sorted(histories.items()) if v}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a buffer
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    for name, points in curves.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", ms=3, label=name)
    ax.set_xlabel("step (epoch)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    with Image.open(buf) as img:
        img.load()
        return img.copy()
