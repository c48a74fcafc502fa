"""The report's sections. Each is one function registered in :data:`SECTIONS`; it returns a
:class:`Section` (text, tables and the PNGs it wrote) or ``None`` where it has nothing to show for
this model, data and protocol. Figures come from the protocol (its result, its decision scores)
and :mod:`twinnet.metrics`; sections only draw them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinnet.calibrate import NATIVE, scale_orientation
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.metrics import calc_error_rates, calc_roc, calc_tar_at_far
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult
from twinnet.registry import Registry
from twinnet.report import calc, plots


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)
    """(file name in the report folder, caption)."""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    """(header, rows)."""


@dataclass
class ReportContext:
    model: AnyTwin
    data: Dataset
    protocol: EvaluationProtocol
    result: ProtocolResult
    out: Path
    run_dir: Path | None = None
    max_items: int = 400
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)

    def png(self, name: str) -> Path:
        return self.out / f"{name}.png"


#: Report sections in the order they were registered (the order of the report).
SECTIONS: Registry[Any] = Registry("report section")
_ORDER: list[str] = []


def register_section(name: str) -> Callable[[Callable[[ReportContext], Section | None]], Any]:
    def decorator(fn: Callable[[ReportContext], Section | None]) -> Callable[[ReportContext], Section | None]:
        SECTIONS.register(name)(fn)
        _ORDER.append(name)
        return fn

    return decorator


def section_names() -> list[str]:
    return [name for name in _ORDER if name in SECTIONS]


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@register_section("summary")
def summary(ctx: ReportContext) -> Section:
    rows = [[k, _fmt(v)] for k, v in ctx.result.metrics.items() if not isinstance(v, (dict, list))]
    direction = "higher" if ctx.result.greater_is_better else "lower"
    return Section(
        f"{ctx.protocol.name}: {ctx.result.primary_metric} = {_fmt(ctx.result.primary)}",
        [
            f"Protocol {ctx.protocol.name} ({ctx.protocol.summary}); its primary metric is "
            f"{ctx.result.primary_metric}, {direction} is better. Data: {ctx.data.source or 'given items'}."
        ],
        tables=[(["metric", "value"], rows)],
    )


def _decisions(ctx: ReportContext) -> dict[str, Any] | None:
    """The protocol's own trials as similarities, and the stored operating point on their scale."""
    if "decisions" in ctx.cache:
        return ctx.cache["decisions"]
    scores = ctx.protocol.decision_scores(ctx.model, ctx.data) if ctx.protocol.makes_decisions() else None
    found = None
    if scores is not None:
        orientation = scale_orientation(ctx.model.comparator.orientation, scores.scale)
        similarity = np.asarray(orientation.to_similarity(scores.native), np.float64)
        stored = ctx.protocol.stored_operating_point(ctx.model)
        threshold = None
        name = None
        if stored is not None and stored[1].scale == scores.scale:
            name, threshold = stored[0], float(orientation.to_similarity(stored[1].threshold))
        found = {
            "similarity": similarity,
            "same": scores.genuine,
            "threshold": threshold,
            "point": name,
            "scale": scores.scale,
        }
    ctx.cache["decisions"] = found
    return found


@register_section("decisions")
def decisions(ctx: ReportContext) -> Section | None:
    d = _decisions(ctx)
    if d is None:
        return None
    sim, same, threshold = d["similarity"], d["same"], d["threshold"]
    far, tar, _ = calc_roc(sim, same)
    point = None
    label = ""
    table: list[list[str]] = []
    for target in (1e-1, 1e-2, 1e-3):
        rate, _t = calc_tar_at_far(sim, same, target)
        table.append([f"FAR ≤ {target:g}", f"{rate:.4f}", "—"])
    if threshold is not None:
        rates = calc_error_rates(sim, same, threshold)
        point = (rates.far, 1 - rates.frr)
        label = f"operating point {d['point']!r}"
        table.append([f"{label} (stored)", f"{1 - rates.frr:.4f}", f"FAR {rates.far:.4f}, FRR {rates.frr:.4f}"])
    plots.plot_roc(far, tar, point, label, ctx.png("roc"))
    plots.plot_det(far, 1 - tar, None if point is None else (point[0], 1 - point[1]), label, ctx.png("det"))
    scale = "similarity" if d["scale"] == NATIVE else f"{d['scale']} score"
    plots.plot_histograms(calc.calc_histograms(sim, same), threshold, scale, ctx.png("scores"))
    where = (
        f"the stored operating point {d['point']!r} (never chosen on these data)"
        if threshold is not None
        else "no stored operating point fits this protocol, so none is marked"
    )
    return Section(
        "Decisions: ROC, DET, score distributions",
        [
            f"{int(same.sum())} genuine and {int((~same).sum())} impostor trials, paired as the {ctx.protocol.name} "
            f"protocol pairs them. The dot and the dashed line are {where}."
        ],
        images=[
            ("roc.png", "ROC: true accepts against false accepts (log scale)"),
            ("det.png", "DET: false rejects against false accepts, normal-deviate axes"),
            ("scores.png", "same (blue) and different (red) pairs' scores, with the threshold"),
        ],
        tables=[(["true accept rate at", "TAR", "at the point"], table)],
    )


def _sample(ctx: ReportContext) -> np.ndarray:
    labels = np.asarray(ctx.data.items.labels)
    rng = np.random.default_rng(ctx.seed)
    classes = rng.permutation(np.unique(labels))[:20]
    keep = np.nonzero(np.isin(labels, classes))[0]
    return np.sort(rng.permutation(keep)[: ctx.max_items])


@register_section("embedding")
def embedding(ctx: ReportContext) -> Section | None:
    if not ctx.protocol.scores_pairs or ctx.data.pairs is not None or ctx.data.runs:
        return None
    idx = _sample(ctx)
    labels = np.asarray(ctx.data.items.labels)[idx]
    if len(idx) < 5 or len(np.unique(labels)) < 2:
        return None
    z = embed_batches(ctx.model, ctx.data.items.subset(idx)).cpu().numpy()
    plots.plot_embedding_map(calc.calc_embedding_map(z, "pca"), labels, "PCA", ctx.png("embedding_pca"))
    plots.plot_embedding_map(calc.calc_embedding_map(z, "tsne", ctx.seed), labels, "t-SNE", ctx.png("embedding_tsne"))
    return Section(
        "Embedding map",
        [
            f"{len(idx)} items of {len(np.unique(labels))} classes, one colour per class. PCA keeps the two directions "
            "of largest spread (distances are faithful, clusters may overlap); t-SNE keeps neighbourhoods (tight, "
            "separate clusters mean a class embeds together; distances between clusters mean little)."
        ],
        images=[("embedding_pca.png", "PCA"), ("embedding_tsne.png", "t-SNE")],
    )


@register_section("confused")
def confused(ctx: ReportContext) -> Section | None:
    if not ctx.protocol.scores_pairs or ctx.data.runs:
        return None
    from twinnet.data.pairs import balanced_pairs
    from twinnet.protocols.verification import pair_values
    from twinnet.runtime import Stream

    items = ctx.data.items
    if ctx.data.pairs is not None:
        pairs = ctx.data.pairs
    else:
        labels = np.asarray(items.labels)
        if len(np.unique(labels)) < 2 or np.bincount(labels).max() < 2:
            return None
        pairs = balanced_pairs(labels, min(2000, 4 * len(labels)), ctx.seed, Stream.EVAL_PAIRS)
    if pairs.same is None or len(pairs) == 0:
        return None
    orientation = ctx.model.comparator.orientation
    sim = np.asarray(orientation.to_similarity(pair_values(ctx.model, items, pairs)), np.float64)
    same = np.asarray(pairs.same, bool)
    if same.all() or not same.any():
        return None
    stored = ctx.model.calibration.find("verification") if ctx.model.calibration is not None else None
    if stored is not None and stored[1].scale == NATIVE:
        threshold, source = float(orientation.to_similarity(stored[1].threshold)), f"stored point {stored[0]!r}"
    else:
        from twinnet.metrics import calc_eer

        threshold, source = float(calc_eer(sim, same)[1]), "the EER threshold of these pairs"
    worst = calc.calc_confused(sim, same, threshold, k=4)
    kind = ctx.model.input_spec("a").kind
    images: list[tuple[str, str]] = []
    for key, title in (
        ("false_accepts", "false accepts: different, yet scored alike"),
        ("false_rejects", "false rejects: same, yet scored apart"),
    ):
        chosen = worst[key]
        if not len(chosen):
            continue
        rows = []
        for i in chosen:
            a, b = items.load([int(pairs.a[i])])[0], items.load([int(pairs.b[i])])[0]
            row: dict[str, Any] = {"a": a, "b": b, "caption": f"similarity {sim[i]:.3f}"}
            if torch.is_tensor(a) and torch.is_tensor(b) and kind in ("image", "sequence"):
                from twinnet.explain import explain_pair

                explained = explain_pair(ctx.model, a, b, "gradients", steps=8)
                row.update(saliency_a=explained.map_a, saliency_b=explained.map_b)
            rows.append(row)
        plots.plot_pairs(rows, kind, title, ctx.png(key))
        images.append((f"{key}.png", title))
    return Section(
        "Most confused pairs",
        [
            f"{len(pairs)} pairs scored; decisions at {source} (similarity {threshold:.4g}). Each row is one pair, "
            "worst first; over images and trajectories the colour shows where the two inputs differ in a way that "
            "moves the score (integrated gradients, twinnet explain)."
        ]
        if images
        else ["No pair was decided wrongly at this threshold."],
        images=images,
    )


@register_section("training")
def training(ctx: ReportContext) -> Section | None:
    log = ctx.run_dir / "metrics.jsonl" if ctx.run_dir is not None else None
    if log is None or not log.is_file():
        return None
    records = calc.read_training_log(log)
    curves = calc.calc_training_curves(records)
    if not curves:
        return None
    plots.plot_curves(curves, ctx.png("training"))
    best = records[-1].get("best_epoch")
    if best is None:
        saved = "."
    elif best == 0:  # validated before training (train.validation.before_training), no epoch beat them
        saved = "; the saved model is the starting weights (no epoch beat them)."
    else:
        saved = f"; the saved model is epoch {best}'s."
    return Section(
        "Training",
        [f"{len(records)} epochs from {log}" + saved],
        images=[("training.png", "training loss and learning rate (left); validation figures per epoch (right)")],
    )


@register_section("tracking")
def tracking(ctx: ReportContext) -> Section | None:
    from twinnet.protocols.tracking import TrackingProtocol
    from twinnet.tracking.items import SequenceItems
    from twinnet.tracking.metrics import SUCCESS_THRESHOLDS, calc_center_error, calc_iou, valid_frames
    from twinnet.tracking.tracker import build_tracker

    if not isinstance(ctx.protocol, TrackingProtocol) or not isinstance(ctx.data.items, SequenceItems):
        return None
    success: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    precision: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    strip = None
    for seq in ctx.data.items.sequences:
        if seq.boxes is None:
            continue
        result = build_tracker(ctx.model, **ctx.protocol.tracker).track(seq, max_frames=ctx.protocol.max_frames)
        truth = seq.boxes[: len(result.boxes)]
        keep = valid_frames(truth)
        ious = np.nan_to_num(calc_iou(result.boxes[keep], truth[keep]), nan=0.0)
        curve = (ious[None] > SUCCESS_THRESHOLDS[:, None]).mean(1) if len(ious) else np.zeros(len(SUCCESS_THRESHOLDS))
        success[f"{seq.name} ({curve.mean():.3f})"] = (SUCCESS_THRESHOLDS, curve)
        precision[seq.name] = calc.calc_precision_curve(calc_center_error(result.boxes[keep], truth[keep]))
        if strip is None:
            picks = np.unique(np.linspace(0, len(result.boxes) - 1, min(6, len(result.boxes))).round().astype(int))
            strip = (
                [seq.frame(int(i)) for i in picks],
                [result.boxes[i] for i in picks],
                [truth[i] for i in picks],
                [f"{seq.name} #{i + 1}" for i in picks],
            )
    if not success or strip is None:
        return None
    plots.plot_lines(success, "overlap threshold (IoU)", "share of frames", "success plot", ctx.png("success"))
    plots.plot_lines(
        precision, "centre error threshold (pixels)", "share of frames", "precision plot", ctx.png("precision")
    )
    plots.plot_frame_strip(*strip, ctx.png("frames"))
    return Section(
        "Tracking",
        [
            "One-pass evaluation: each sequence tracked from its first ground-truth box. The success plot gives the "
            "share of frames whose box overlaps the truth by more than each IoU (its mean, in brackets, is the success "
            "AUC); the precision plot the share whose centre is within each distance (OTB reads it at 20 px)."
        ],
        images=[
            ("success.png", "success plot"),
            ("precision.png", "precision plot"),
            ("frames.png", "tracked box (green) and ground truth (white, dashed)"),
        ],
    )


@register_section("writers")
def writers(ctx: ReportContext) -> Section | None:
    from twinnet.protocols.signature import SignatureProtocol, signature_scores

    if not isinstance(ctx.protocol, SignatureProtocol):
        return None
    values, genuine, owner = signature_scores(
        ctx.model, ctx.data.items, ctx.protocol.references, ctx.protocol.aggregate, ctx.protocol.seed
    )
    eers = calc.calc_writer_eers(ctx.model.comparator.orientation.to_similarity(np.asarray(values)), genuine, owner)
    if not eers:
        return None
    labels = {f"writer {w}": e for w, e in sorted(eers.items(), key=lambda kv: -kv[1])}
    pooled = ctx.result.metrics.get("eer")
    plots.plot_bars(labels, "EER", "per-writer EER", ctx.png("writers"), None if pooled is None else float(pooled))
    return Section(
        "Writers",
        [
            f"Each writer's own EER on raw comparator values ({ctx.protocol.references} references, "
            f"{ctx.protocol.aggregate} distance), worst first; the dashed line is the pooled EER, which one threshold "
            "for all writers gives."
        ],
        images=[("writers.png", "per-writer EER")],
    )
