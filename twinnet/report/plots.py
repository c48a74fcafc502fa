"""The report's plots: each function draws one figure with matplotlib's Agg backend (no display)
and writes it as a PNG, atomically (a temporary file, then a rename)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from twinnet.registry import Registry
from twinnet.report.calc import calc_probit

GENUINE, IMPOSTOR, POINT = "#2a7ab0", "#d1495b", "#222222"


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG via a temporary file and a rename; closes the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fig.savefig(partial, format="png", dpi=100, bbox_inches="tight")
        partial.replace(path)
    finally:
        plt.close(fig)
        partial.unlink(missing_ok=True)
    return path


def plot_roc(far: np.ndarray, tar: np.ndarray, point: tuple[float, float] | None, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot(np.clip(far, 1e-4, 1), tar, color=GENUINE, lw=1.8)
    if point is not None:
        ax.scatter([max(point[0], 1e-4)], [point[1]], color=POINT, zorder=3, label=label)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="false accept rate (log)", ylabel="true accept rate", title="ROC", xlim=(1e-4, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def plot_det(far: np.ndarray, frr: np.ndarray, point: tuple[float, float] | None, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot(calc_probit(far), calc_probit(frr), color=IMPOSTOR, lw=1.8)
    ticks = np.array([1e-3, 1e-2, 0.05, 0.2, 0.5])
    ax.set_xticks(calc_probit(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(calc_probit(ticks), [f"{t:g}" for t in ticks])
    if point is not None:
        ax.scatter(
            calc_probit(np.array([point[0]])), calc_probit(np.array([point[1]])), color=POINT, zorder=3, label=label
        )
        ax.legend(loc="upper right", fontsize=8)
    ax.set(xlabel="false accept rate", ylabel="false reject rate", title="DET (normal deviate scale)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_histograms(hist: dict[str, np.ndarray], threshold: float | None, xlabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    edges = hist["edges"]
    centres, width = (edges[1:] + edges[:-1]) / 2, np.diff(edges)
    ax.bar(centres, hist["genuine"], width=width, color=GENUINE, alpha=0.55, label="same")
    ax.bar(centres, hist["impostor"], width=width, color=IMPOSTOR, alpha=0.55, label="different")
    if threshold is not None:
        ax.axvline(threshold, color=POINT, ls="--", lw=1.4, label="threshold")
    ax.set(xlabel=xlabel, ylabel="density", title="same / different scores")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_embedding_map(xy: np.ndarray, labels: np.ndarray, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab20", max(len(classes), 1))
    for i, c in enumerate(classes):
        mine = labels == c
        ax.scatter(xy[mine, 0], xy[mine, 1], s=14, color=cmap(i % 20), alpha=0.85)
    ax.set(title=title, xticks=[], yticks=[])
    return save_figure(fig, path)


def plot_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path) -> Path:
    """Training curves: the loss (and learning rate) on the left, validation figures on the right."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, (xs, ys) in curves.items():
        if name == "train_loss":
            left.plot(xs, ys, marker="o", ms=3, label=name)
        elif name.startswith("val_") and name not in ("val_n_pairs",):
            right.plot(xs, ys, marker="o", ms=3, label=name[4:])
    if "lr" in curves:
        twin = left.twinx()
        twin.plot(*curves["lr"], color="grey", ls=":", label="lr")
        twin.set_ylabel("learning rate")
    left.set(xlabel="epoch", ylabel="training loss", title="training")
    right.set(xlabel="epoch", title="validation")
    left.legend(fontsize=8)
    if right.lines:
        right.legend(fontsize=7)
    return save_figure(fig, path)


def plot_lines(
    series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str, title: str, path: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, lw=1.6, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_bars(values: dict[str, float], ylabel: str, title: str, path: Path, line: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(values) + 2), 3.6))
    ax.bar(list(values), list(values.values()), color=GENUINE)
    if line is not None:
        ax.axhline(line, color=POINT, ls="--", lw=1.2, label="pooled")
        ax.legend(fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    return save_figure(fig, path)


def plot_frame_strip(
    frames: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    truth: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: Path,
) -> Path:
    """Frames side by side with the tracked box (green) and the ground truth (white, dashed)."""
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, len(frames), figsize=(2.6 * len(frames), 2.4))
    for ax, frame, box, gt, title in zip(np.atleast_1d(axes), frames, boxes, truth, titles, strict=True):
        ax.imshow(frame)
        if gt is not None and np.isfinite(gt).all():
            ax.add_patch(Rectangle((float(gt[0]), float(gt[1])), gt[2], gt[3], fill=False, ec="white", ls="--", lw=1.2))
        ax.add_patch(Rectangle((float(box[0]), float(box[1])), box[2], box[3], fill=False, ec="lime", lw=1.6))
        ax.set(title=title, xticks=[], yticks=[])
    return save_figure(fig, path)


# -- one input drawn small, by the kind of input (model.input.kind) ------------------------------------

#: How one input of a kind is drawn on an axis: ``(ax, item, saliency or None)``.
THUMBNAILS: Registry[Any] = Registry("thumbnail")


@THUMBNAILS.register("image")
def _image(ax: Any, item: Any, saliency: np.ndarray | None = None) -> None:
    array = np.asarray(item, np.float32)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=1)
    if saliency is not None:
        ax.imshow(saliency, cmap="jet", alpha=0.45, vmin=0, vmax=1)


@THUMBNAILS.register("sequence")
def _sequence(ax: Any, item: Any, saliency: np.ndarray | None = None) -> None:
    array = np.asarray(item, np.float32)  # (features, time): the first two features are x and y
    colour = saliency[0] if saliency is not None else np.linspace(0, 1, array.shape[1])
    ax.scatter(array[0], array[1], c=colour, cmap="jet" if saliency is not None else "viridis", s=4)
    ax.set_aspect("equal", adjustable="datalim")


@THUMBNAILS.register("text")
def _text(ax: Any, item: Any, saliency: np.ndarray | None = None) -> None:
    ax.text(
        0.02, 0.98, "\n".join(textwrap.wrap(str(item), 28)[:8]), va="top", ha="left", fontsize=7, transform=ax.transAxes
    )


@THUMBNAILS.register("vector")
def _vector(ax: Any, item: Any, saliency: np.ndarray | None = None) -> None:
    ax.bar(np.arange(len(item)), np.asarray(item, np.float32), color=GENUINE)


def plot_pairs(rows: Sequence[dict[str, Any]], kind: str, title: str, path: Path) -> Path:
    """Pairs as thumbnails, one row each: ``{"a", "b", "caption", "saliency_a", "saliency_b"}``."""
    draw = THUMBNAILS.get(kind, field="model.input.kind")
    fig, axes = plt.subplots(len(rows), 2, figsize=(4.4, 2.1 * len(rows)), squeeze=False)
    for (left, right), row in zip(axes, rows, strict=True):
        draw(left, row["a"], row.get("saliency_a"))
        draw(right, row["b"], row.get("saliency_b"))
        for ax in (left, right):
            ax.set(xticks=[], yticks=[])
        left.set_title(row["caption"], fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_pair_saliency(
    a: Any, b: Any, map_a: np.ndarray, map_b: np.ndarray, kind: str, caption: str, path: Path
) -> Path:
    """``twinnet explain``: both inputs, bare and with their saliency drawn over them."""
    draw = THUMBNAILS.get(kind, field="model.input.kind")
    fig, axes = plt.subplots(2, 2, figsize=(6, 6))
    for col, (item, saliency, name) in enumerate(((a, map_a, "A"), (b, map_b, "B"))):
        draw(axes[0, col], item, None)
        draw(axes[1, col], item, saliency)
        axes[0, col].set_title(name)
        for ax in axes[:, col]:
            ax.set(xticks=[], yticks=[])
    fig.suptitle(caption, fontsize=9)
    return save_figure(fig, path)
