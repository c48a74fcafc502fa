"""The ``twinnet`` command: a thin layer over the library (every command calls one library function).

Errors a user can fix are printed as one line naming the file or field, with exit status 2.
Results go to standard output (``--json`` for machine-readable); progress and logs to standard error.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twinnet.errors import ConfigError, DataError, TwinnetError

# The image reader refuses images over its own pixel limit with a message naming the file; Pillow's
# warning about the same images (above 200 megapixels) would only add two lines of noise before it.
warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")

app = typer.Typer(
    name="twinnet",
    help="Twin (Siamese) networks: train, evaluate, verify, embed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn TwinnetError (bad input) into a one-line message and exit status 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TwinnetError as e:
            # the message is text, not markup: "[enforce fail …]" or a file named "a[1].png" must print as is
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_json(data: Any) -> None:
    """``data`` as JSON on standard output. NaN and infinity are not JSON (most parsers reject
    them): a result holding one is an error naming where, never an invalid document."""
    try:
        text = json.dumps(data, indent=2, default=float, allow_nan=False)
    except ValueError:
        where = _non_finite_path(data) or "(a value)"
        raise DataError(f"the result has a non-finite number at {where}; nothing was printed") from None
    sys.stdout.write(text + "\n")


def _non_finite_path(data: Any, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinite number in nested dicts and lists, if any."""
    if isinstance(data, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in data.items())
    elif isinstance(data, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(data))
    else:
        try:
            return None if isinstance(data, (bool, str)) or math.isfinite(float(data)) else (path or "the top level")
        except (TypeError, ValueError, OverflowError):
            return None
    for key, value in items:
        found = _non_finite_path(value, key)
        if found is not None:
            return found
    return None


def _at_least(option: str, value: int | None, minimum: int) -> None:
    """Option values out of range are one-line errors naming the option (``--ways 1``, ``--top-k 0``)."""
    if value is not None and value < minimum:
        raise ConfigError(f"{option}: must be at least {minimum}, not {value}")


def _finite(option: str, value: float | None) -> None:
    """``--threshold nan`` would decide "different" for everything, ``inf`` "same": both are errors."""
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{option}: {value} is not a finite number")


def _table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    for k, v in rows.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


def _protocol_help() -> str:
    from twinnet.protocols import PROTOCOLS

    return "; ".join(f"{name}: {factory.summary}" for name, factory in PROTOCOLS.items())  # type: ignore[attr-defined]


_OP_HELP = "The model's operating point to decide at (default: its default; --threshold overrides)."
_RUNTIME_HELP = "torch (a saved model) or onnx (a directory written by `twinnet export`, run by ONNX Runtime)."
_NORMALIZE_HELP = ("Fit a cohort score normaliser (znorm | tnorm | snorm) on --cohort first: the threshold is "
                   "then fitted on normalised scores, and verify, gallery and serve normalise.")  # fmt: skip
_NORMALIZATION_HELP = ("signature: writer-dependent score normalisation from the references: zscore, shift, "
                       "ratio or none (default: as the model's signature operating point was fitted).")  # fmt: skip


def _format_help() -> str:
    from twinnet.data.sources import format_names

    return " | ".join(format_names())


@app.command()
@friendly_errors
def train(
    data: Path = typer.Option(
        None,
        "--data",
        help="Image folder (one sub-folder per class), a pairs file, … (data.format: " + _format_help() + ")",
    ),
    out_dir: Path = typer.Option(..., "--out", help="Run directory; the model is saved in OUT/model."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML/JSON config file."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last."),
    init_from: Path = typer.Option(
        None, "--init-from", help="Start the encoders from this saved model (pretrained without labels, say)."
    ),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out unreadable images instead of stopping."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    overrides: list[str] = typer.Argument(None, help="Config overrides, e.g. train.lr=3e-4 train.epochs=5."),
) -> None:
    """Train a twin network and save it, calibrated, to OUT/model."""
    from twinnet.config import load_config
    from twinnet.train import train_from_config

    extra = list(overrides or [])
    if data is not None:
        extra.append(f"data.path={data}")
    if skip_bad:
        extra.append("data.skip_bad_images=true")
    if init_from is not None:
        extra.append(f"train.init_from={init_from}")
    if quiet:
        extra.append("train.progress=false")
    cfg = load_config(config, extra)
    result = train_from_config(cfg, out_dir, resume=resume, console=err)
    if not result.is_main:  # another process of a torchrun: rank 0 reports
        return
    summary = {
        "model": str(result.model_dir),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_seconds": result.train_seconds,
        "validation": result.validation,
    }
    if as_json:
        _print_json(summary)
    else:
        rows = {k: v for k, v in result.validation.items() if isinstance(v, float)}
        out.print(_table("validation (best epoch)", rows))
        out.print(f"model saved to {result.model_dir}")


@app.command()
@friendly_errors
def evaluate(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="Saved model (or run) directory; or a config file, to evaluate its model untrained."
    ),
    data: Path = typer.Option(
        ..., "--data", help="Image folder or zip of test classes, a pairs file (images or texts), or run folders."
    ),
    protocol: str = typer.Option("verification", "--protocol", help="A registered protocol. " + _protocol_help()),
    data_format: str = typer.Option("auto", "--format", help="Data format: " + _format_help()),
    references: int = typer.Option(None, "--references", help="signature: genuine references enrolled per writer."),
    aggregate: str = typer.Option(None, "--aggregate", help="signature: min (nearest reference) or mean distance."),
    normalization: str = typer.Option(None, "--normalization", help=_NORMALIZATION_HELP),
    pairs_file: Path = typer.Option(None, "--pairs-file", help="signature: SigComp-style pairs CSV for pair accuracy."),
    ways: int = typer.Option(None, "--ways", help="N of N-way episodes (default 5; 20 within-alphabet)."),
    shots: int = typer.Option(None, "--shots", help="K of K-shot episodes (default 1)."),
    episodes: int = typer.Option(None, "--episodes", help="Number of episodes (default 1000)."),
    pairs: int = typer.Option(None, "--pairs", help="verification: balanced pairs drawn from a folder (default 4000)."),
    folds: int = typer.Option(
        None,
        "--folds",
        help="pairs: K-fold accuracy, each fold's threshold from the others (LFW: 10; an LFW pairs.txt's own sets).",
    ),
    prototype: str = typer.Option(None, "--prototype", help="K>1: nearest shot or class mean."),
    impostors: str = typer.Option(None, "--impostors", help="fvc: impostor trials fvc (first impressions) or all."),
    class_depth: int = typer.Option(
        None, "--class-depth", help="Folder levels that name a class (default 1; 2 for Omniglot)."
    ),
    seed: int = typer.Option(None, "--seed", help="Seed of sampled pairs, episodes or references (default 0)."),
    reset: bool = typer.Option(
        False, "--reset", help="tracking: add VOT's reset evaluation: accuracy, robustness (failures per 100 frames)."
    ),
    skip_bad: bool = typer.Option(False, "--skip-bad"),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Evaluate a model with a registered protocol: verification (ROC AUC, EER, TAR@FAR), N-way K-shot
    accuracy, signatures, or for text models STS correlation, pair classification, retrieval."""
    from twinnet.data.sources import ReadOptions
    from twinnet.evaluate import evaluate_model, load_model_or_config

    for option, value, minimum in (("--ways", ways, 2), ("--shots", shots, 1), ("--episodes", episodes, 1),
                                   ("--pairs", pairs, 2), ("--references", references, 1),
                                   ("--class-depth", class_depth, 1), ("--seed", seed, 0),
                                   ("--folds", folds, 2)):  # fmt: skip
        _at_least(option, value, minimum)
    given = {"references": references, "aggregate": aggregate, "pairs_file": None if pairs_file is None else
             str(pairs_file), "ways": ways, "shots": shots, "episodes": episodes, "n_pairs": pairs,
             "prototype": prototype, "seed": seed, "folds": folds, "normalization": normalization,
             "impostors": impostors, "reset": reset or None}  # fmt: skip
    params = {k: v for k, v in given.items() if v is not None}
    model = load_model_or_config(model_path, runtime=runtime)
    options = ReadOptions(class_depth=class_depth, skip_bad=skip_bad)
    result = evaluate_model(model, data, protocol, params, format=data_format, options=options, drift=True).to_dict()
    result["source"] = str(data)
    checks = result.get("operating_points", {}).get("checks", [])
    for check in checks:
        if check["drifted"]:
            err.print(f"warning: operating point {escape(check['message'])}", highlight=False, soft_wrap=True)
    if as_json:
        _print_json(result)
        return
    rows = {k: v for k, v in result.items() if not isinstance(v, dict) and k != "operating_points"}
    for name, nested in result.items():
        if isinstance(nested, dict):
            rows.update({f"{name} {k}": v for k, v in nested.items()})
    if "ci95" in result:
        rows["accuracy"] = f"{result['accuracy']:.4f} ± {result['ci95']:.4f} (95% CI)"
        rows.pop("ci95")
    if "accuracy_std" in result:  # k-fold pairs: mean ± standard deviation over the folds
        rows["accuracy"] = f"{result['accuracy']:.4f} ± {result.pop('accuracy_std'):.4f} (std, {result['folds']} folds)"
        rows.pop("accuracy_std", None)
    out.print(_table(f"{protocol} on {data}", rows))
    for check in checks:
        out.print(escape(check["message"]), highlight=False, soft_wrap=True)


def _decision_params(references: int | None, aggregate: str | None, pairs: int | None,
                     seed: int | None, normalization: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The protocol options ``calibrate`` and ``init`` take (a protocol refuses options it has not)."""
    for option, value, minimum in (("--references", references, 1), ("--pairs", pairs, 2), ("--seed", seed, 0)):
        _at_least(option, value, minimum)
    given = {"references": references, "aggregate": aggregate, "n_pairs": pairs, "seed": seed,
             "normalization": normalization}  # fmt: skip
    return {k: v for k, v in given.items() if v is not None}


def _parse_target(target: str) -> str:
    from twinnet.calibrate import parse_target

    try:
        return str(parse_target(target))
    except ValueError as e:
        raise ConfigError(f"--target: {e}") from None


def _ci(ci: Any) -> str:
    return "" if ci is None else f" [{ci[0]:.4f}, {ci[1]:.4f}]"


_INTERVALS = {"clopper-pearson": "Clopper–Pearson (pairs as independent)",
              "bootstrap-identity": "bootstrap-by-identity (identities resampled, seeded)"}  # fmt: skip


def _print_point(name: str, point: Any, is_default: bool) -> None:
    p = point.provenance
    out.print(f"operating point {escape(name)}{' (the default)' if is_default else ''}: target {point.target}, "
              f"threshold {point.threshold:.6g}", highlight=False, soft_wrap=True)  # fmt: skip
    out.print(f"  FAR {point.far:.4f}{_ci(point.far_ci)} ({point.false_accepts} of {p.impostor_pairs} impostor pairs)",
              highlight=False, soft_wrap=True)  # fmt: skip
    out.print(f"  FRR {point.frr:.4f}{_ci(point.frr_ci)} ({point.false_rejects} of {p.genuine_pairs} genuine pairs)",
              highlight=False, soft_wrap=True)  # fmt: skip
    out.print(f"  95% {_INTERVALS.get(point.interval, point.interval)} intervals; {p.identities} identities, "
              f"{p.protocol} protocol {json.dumps(p.settings)}; threshold on the {point.scale} scale",
              highlight=False, soft_wrap=True)  # fmt: skip
    if point.interval == "clopper-pearson":
        out.print("  the intervals treat pairs as independent: pairs of one identity are correlated, so with few "
                  "identities they are too narrow", highlight=False, soft_wrap=True)  # fmt: skip
    if point.warning:
        err.print(f"warning: {escape(point.warning)}", highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def calibrate(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Saved model (or run) directory; updated in place."),
    data: Path = typer.Option(..., "--data", help="Labelled data of your population (a folder of classes, pairs…)."),
    data_format: str = typer.Option("auto", "--format", help="Data format: " + _format_help()),
    protocol: str = typer.Option("verification", "--protocol", help="verification (pairs) or signature."),
    target: str = typer.Option("eer", "--target", help="eer | best_accuracy | far=<rate> | frr=<rate>"),
    name: str = typer.Option("default", "--name", help="The operating point's name."),
    make_default: bool = typer.Option(
        None, "--default/--no-default", help="Make it the default (default: when named 'default' or the first)."
    ),
    references: int = typer.Option(None, "--references", help="signature: genuine references enrolled per writer."),
    aggregate: str = typer.Option(None, "--aggregate", help="signature: min (nearest reference) or mean distance."),
    pairs: int = typer.Option(None, "--pairs", help="verification: balanced pairs drawn from a folder (default 4000)."),
    seed: int = typer.Option(None, "--seed", help="Seed of sampled pairs or references (default 0)."),
    normalization: str = typer.Option(None, "--normalization", help=_NORMALIZATION_HELP),
    normalize: str = typer.Option(None, "--normalize", help=_NORMALIZE_HELP),
    cohort: Path = typer.Option(None, "--cohort", help="--normalize: data of other identities (the cohort)."),
    check: bool = typer.Option(False, "--check", help="Only check the stored points on DATA (drift); change nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit an operating point (a threshold for a target FAR, FRR or the EER) on your labelled data and
    store it in MODEL; with --check, measure the stored points on the data and say which drifted."""
    from twinnet.data.sources import read_dataset
    from twinnet.io import load, resolve_model_dir, save
    from twinnet.operating import drift_report, recalibrate

    params = _decision_params(references, aggregate, pairs, seed, normalization)
    target = _parse_target(target)
    if (normalize is None) != (cohort is None):
        raise ConfigError("--normalize and --cohort go together: the kind of normaliser and its cohort")
    directory = resolve_model_dir(model_path)
    model = load(directory)
    dataset = read_dataset(data, model.input_spec("a"), data_format, field="--format")
    if check:
        report = drift_report(model, dataset, protocol, params)
        if as_json:
            _print_json({"model": str(directory), "source": str(data), **report.to_json()})
        else:
            out.print(f"{report.protocol} on {data}: {report.genuine_pairs} genuine and {report.impostor_pairs} "
                      f"impostor pairs (95% {_INTERVALS.get(report.interval, report.interval)} intervals)",
                      highlight=False, soft_wrap=True)  # fmt: skip
            for c in report.checks:
                out.print(escape(c.message), highlight=False, soft_wrap=True)
        for c in report.checks:
            if c.drifted:
                err.print(f"warning: operating point {escape(c.message)}", highlight=False, soft_wrap=True)
        return
    if normalize is not None:
        from twinnet.operating import fit_cohort_normalizer

        fit_cohort_normalizer(model, read_dataset(cohort, model.input_spec("b"), data_format, field="--cohort"),
                              normalize)  # fmt: skip
    point = recalibrate(model, dataset, protocol, target, name, params, make_default=make_default)
    save(model, directory)
    assert model.calibration is not None
    is_default = model.calibration.resolve(name) == model.calibration.default
    if as_json:
        _print_json({"model": str(directory), "name": name, "default": is_default, **point.to_json()})
        return
    _print_point(name, point, is_default)
    out.print(f"saved to {escape(str(directory))}", highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def init(
    config: Path = typer.Option(..., "--config", "-c", help="YAML/JSON config file (its model section)."),
    out_dir: Path = typer.Option(..., "--out", help="Model directory to write."),
    calibrate_on: Path = typer.Option(None, "--calibrate-on", help="Labelled data to fit an operating point on."),
    data_format: str = typer.Option("auto", "--format", help="Data format of --calibrate-on: " + _format_help()),
    protocol: str = typer.Option("verification", "--protocol", help="verification (pairs) or signature."),
    target: str = typer.Option("eer", "--target", help="eer | best_accuracy | far=<rate> | frr=<rate>"),
    name: str = typer.Option("default", "--name", help="The operating point's name."),
    references: int = typer.Option(None, "--references", help="signature: genuine references enrolled per writer."),
    aggregate: str = typer.Option(None, "--aggregate", help="signature: min (nearest reference) or mean distance."),
    pairs: int = typer.Option(None, "--pairs", help="verification: balanced pairs drawn from a folder (default 4000)."),
    seed: int = typer.Option(None, "--seed", help="Seed of sampled pairs or references (default 0)."),
    as_json: bool = typer.Option(False, "--json"),
    overrides: list[str] = typer.Argument(None, help="Config overrides, e.g. model.comparator.name=cosine."),
) -> None:
    """Save the model a config describes, untrained (a pretrained encoder, a raw-pixel baseline), so
    that it is evaluated, calibrated and served with the same commands as a trained one."""
    from twinnet.config import load_config
    from twinnet.data.sources import read_dataset
    from twinnet.io import save
    from twinnet.model import build_model
    from twinnet.operating import recalibrate

    params = _decision_params(references, aggregate, pairs, seed)
    target = _parse_target(target) if calibrate_on is not None else target
    cfg = load_config(config, list(overrides or []))
    for field, encoder in (("model.encoder", cfg.model.encoder), ("model.encoder_b", cfg.model.encoder_b)):
        if encoder is not None and encoder.name == "small_text":
            raise ConfigError(f"{field}: small_text builds its vocabulary from training texts, so an untrained "
                              "small_text model cannot be saved; train it (twinnet train) or use a pretrained "
                              "text encoder (name: text)")  # fmt: skip
    model = build_model(cfg.model)
    point = None
    if calibrate_on is not None:
        dataset = read_dataset(calibrate_on, model.input_spec("a"), data_format, field="--format")
        point = recalibrate(model, dataset, protocol, target, name, params)
    save(model, out_dir)
    if as_json:
        _print_json(
            {"model": str(out_dir), "operating_point": None if point is None else {"name": name, **point.to_json()}}
        )
        return
    if point is not None:
        _print_point(name, point, True)
    out.print(f"model saved to {escape(str(out_dir))} (untrained{'' if point else ', no operating point'})",
              highlight=False, soft_wrap=True)  # fmt: skip


@app.command()
@friendly_errors
def track(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="A saved tracking model (or run) directory."),
    sequence: Path = typer.Option(..., "--sequence", help="A sequence folder (OTB/VOT), frames, or a video."),
    init: str = typer.Option(None, "--init", help="The target in the first frame: x,y,w,h (1-based, pixels)."),
    boxes_out: Path = typer.Option(None, "--out", help="Write the boxes here, one x,y,w,h line per frame (OTB)."),
    render: Path = typer.Option(None, "--render", help="Draw the boxes: a video (out.mp4) or a folder of frames."),
    settings: list[str] = typer.Option(None, "--set", help="Tracker setting, e.g. --set window_influence=0.2."),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Track a target through a sequence with a tracking model (SiamFC or a box head; boxes per frame,
    optionally rendered)."""
    from twinnet.io import load
    from twinnet.tracking.run import parse_settings, track_sequence

    summary = track_sequence(load(model_path, runtime=runtime), sequence, init=init, out=boxes_out,
                             render_to=render, overrides=parse_settings(settings))  # fmt: skip
    if as_json:
        _print_json(summary)
    else:
        out.print(_table(f"tracking {sequence}", summary))


@app.command()
@friendly_errors
def report(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Saved model (or run) directory."),
    data: Path = typer.Option(..., "--data", help="Test data, as for `twinnet evaluate`."),
    out_dir: Path = typer.Option(Path("report"), "--out", help="Report folder (index.html and PNGs)."),
    protocol: str = typer.Option("verification", "--protocol", help="A registered protocol. " + _protocol_help()),
    data_format: str = typer.Option("auto", "--format", help="Data format: " + _format_help()),
    class_depth: int = typer.Option(None, "--class-depth", help="Folder levels that name a class (default 1)."),
) -> None:
    """Write a report: ROC/DET with the operating point, score histograms, TAR@FAR, embedding map,
    the most confused pairs, training curves; tracking and per-writer plots where they apply."""
    from twinnet.data.sources import ReadOptions
    from twinnet.evaluate import load_model_or_config
    from twinnet.report import build_report, find_run_dir

    _at_least("--class-depth", class_depth, 1)
    model = load_model_or_config(model_path)
    index = build_report(model, data, out_dir, protocol, format=data_format,
                         options=ReadOptions(class_depth=class_depth), run_dir=find_run_dir(model_path))  # fmt: skip
    out.print(f"wrote {index} (open it in a browser)", highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def explain(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    a: str = typer.Argument(..., metavar="A", help="First input: an image, or a .npy (vector and sequence models)."),
    b: str = typer.Argument(..., metavar="B", help="Second input."),
    out_path: Path = typer.Option(Path("pair.png"), "--out", help="PNG of both inputs with their saliency."),
    method: str = typer.Option("gradients", "--method", help="gradients (integrated), gradcam, or rollout."),
    as_json: bool = typer.Option(False, "--json", help="Print the value, method and peaks as JSON."),
) -> None:
    """Which regions of each input drive the pair's score, drawn over both inputs."""
    from twinnet.evaluate import load_model_or_config
    from twinnet.explain import explain_pair
    from twinnet.inference import read_input
    from twinnet.report.plots import plot_pair_saliency

    model = load_model_or_config(model_path)
    x_a, x_b = read_input(a, model.input_spec("a")), read_input(b, model.input_spec("b"))
    result = explain_pair(model, x_a, x_b, method)  # type: ignore[arg-type]
    kind = model.input_spec("a").kind
    caption = f"{method}: {model.comparator.orientation.value_name} {result.value:.4f}"
    plot_pair_saliency(x_a, x_b, result.map_a, result.map_b, kind, caption, out_path)
    if as_json:
        _print_json({**result.to_dict(), "out": str(out_path)})
        return
    out.print(f"{caption}; wrote {out_path}", highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def verify(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    a: str = typer.Argument(..., metavar="A", help="First input: an image, a .npy (vector models) or a text."),
    b: str = typer.Argument(..., metavar="B", help="Second input."),
    threshold: float = typer.Option(None, "--threshold", help="Override the calibrated threshold (native scale)."),
    operating_point: str = typer.Option(None, "--operating-point", help=_OP_HELP),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Are A and B the same? Prints the distance or score, the threshold and the decision."""
    from twinnet.inference import verify as verify_pair
    from twinnet.io import load

    _finite("--threshold", threshold)
    model = load(model_path, runtime=runtime)
    result = verify_pair(model, a, b, threshold, operating_point).to_dict()
    if as_json:
        _print_json(result)
        return
    key = "distance" if "distance" in result else "score"
    decision = {True: "[green]same[/]", False: "[red]different[/]", None: "undecided (no threshold)"}[result["same"]]
    t = "none" if result["threshold"] is None else f"{result['threshold']:.4f}"
    at = "" if result["operating_point"] is None else f", operating point {escape(result['operating_point'])}"
    out.print(f"{key} {result[key]:.4f} · threshold {t} ({result['rule']}{at}) · {decision}", soft_wrap=True)
    for note in result.get("notes", []):
        err.print(f"note: {note}")


@app.command()
@friendly_errors
def embed(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUT...", help="Files, or folders of files; for a text model, text files (one text per line)."
    ),
    out_file: Path = typer.Option(..., "--out", help="Where to write the (N, dim) float32 .npy array."),
    batch_size: int = typer.Option(256, "--batch-size"),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
) -> None:
    """Embed inputs and save them as a .npy array (row order = input order; names in OUT.txt)."""
    from twinnet.inference import embed_files

    _at_least("--batch-size", batch_size, 1)
    n, dim = embed_files(model_path, inputs, out_file, batch_size, runtime=runtime)
    err.print(f"wrote {n} embeddings of dimension {dim} to {out_file}")


@app.command()
@friendly_errors
def quickstart(
    out_dir: Path = typer.Option(Path("runs/quickstart"), "--out", help="Run directory."),
    seed: int = typer.Option(0, "--seed"),
    epochs: int = typer.Option(None, "--epochs", help="Override the number of epochs."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train on scikit-learn's digits 0–5, test on held-back images and on unseen digits 6–9."""
    from twinnet.quickstart import run_quickstart

    _at_least("--epochs", epochs, 1)
    _at_least("--seed", seed, 0)
    result = run_quickstart(out_dir, seed=seed, epochs=epochs, progress=not quiet, console=err)
    if as_json:
        _print_json(result)
        return
    table = Table(title="twinnet quickstart: digits 0–5 trained, 6–9 never seen")
    for col in ("", "ROC AUC", "EER", "4-way 1-shot"):
        table.add_column(col)
    s, u, b = result["seen"], result["unseen"], result["unseen_raw_pixel_baseline"]
    table.add_row("seen digits (held-back images)", f"{s['roc_auc']:.4f}", f"{s['eer']:.4f}", "")
    table.add_row(
        "unseen digits 6–9", f"{u['roc_auc']:.4f}", f"{u['eer']:.4f}",
        f"{u['oneshot_4way_accuracy']:.3f} ± {u['oneshot_4way_ci95']:.3f}",
    )  # fmt: skip
    table.add_row(
        "unseen, raw-pixel distance (reference)", f"{b['roc_auc']:.4f}", "", f"{b['oneshot_4way_accuracy']:.3f}"
    )
    c = result["unseen_centred_pixel_baseline"]
    table.add_row(
        "unseen, centred-pixel cosine (reference)", f"{c['roc_auc']:.4f}", "", f"{c['oneshot_4way_accuracy']:.3f}"
    )
    out.print(table)
    out.print(f"model saved to {result['model']}; example images of unseen digits in {result['examples']}")
    out.print(f"{result['seconds']:.0f} s")


data_app = typer.Typer(help="Fetch data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("download")
@friendly_errors
def data_download(
    dataset: str = typer.Argument(..., help="omniglot"),
    to: Path = typer.Option(..., "--to", help="Folder for the files."),
    files: list[str] = typer.Option(None, "--file", help="Which files (default: background and evaluation zips)."),
    base_url: str = typer.Option(None, "--base-url", help="A mirror of the official files."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Download a data set's canonical files, verify their checksums; run again to resume."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from twinnet.data.download import download_omniglot
    from twinnet.data.omniglot import OFFICIAL_BASE_URL
    from twinnet.errors import DataError

    if dataset != "omniglot":
        raise DataError(f"unknown data set {dataset!r}; known: omniglot")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err) as bar:
        tasks: dict[str, Any] = {}

        def progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        report = download_omniglot(to, files or None, base_url or OFFICIAL_BASE_URL, progress)
    if as_json:
        _print_json({"to": str(to), "files": report})
    else:
        for name, checked in report.items():
            out.print(f"{to / name}: verified {checked}")


gallery_app = typer.Typer(help="Galleries of enrolled identities: identification (1:N) and verification (1:1).",
                          no_args_is_help=True)  # fmt: skip
app.add_typer(gallery_app, name="gallery")


def _open_gallery(model_path: Path, gallery: Path, runtime: str = "torch"):
    from twinnet.gallery import Gallery
    from twinnet.io import load

    model = load(model_path, runtime=runtime)
    return Gallery.open(gallery, model)


@gallery_app.command("create")
@friendly_errors
def gallery_create(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="Gallery directory to create."),
    index: str = typer.Option("auto", "--index", help="auto | flat (exact) | hnsw | ivf"),
    backend: str = typer.Option("faiss", "--backend", help="faiss | qdrant"),
    qdrant_url: str = typer.Option(None, "--qdrant-url", help="A Qdrant server; default: embedded, in the gallery."),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    codes: int = typer.Option(None, "--codes", help="Index BITS-bit SimHash codes (Hamming) instead of floats."),
    codes_fit: list[str] = typer.Option(
        None, "--codes-fit", help="With --codes: files (or folders) whose mean embedding centres the hyperplanes."
    ),
    rescore: int = typer.Option(
        0, "--rescore", help="A gallery of codes: score the N best candidates exactly in float (that scale)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create an empty gallery tied to MODEL."""
    from twinnet.errors import DataError
    from twinnet.gallery import Gallery
    from twinnet.inference import expand_inputs
    from twinnet.io import load

    if backend not in ("faiss", "qdrant"):
        raise DataError(f"--backend: {backend!r} is not one of faiss, qdrant")
    _at_least("--rescore", rescore, 0)
    model = load(model_path, runtime=runtime)
    fit = expand_inputs(codes_fit) if codes_fit else None
    g = Gallery.create(gallery, model, index=index, backend=backend, qdrant_url=qdrant_url,  # type: ignore[arg-type]
                       codes=codes, codes_fit=fit, rescore=rescore)  # fmt: skip
    info = {"gallery": str(gallery), **g.info}
    g.close()
    _print_json(info) if as_json else out.print(f"created gallery {gallery} ({index} index, {backend})")


@gallery_app.command("enroll")
@friendly_errors
def gallery_enroll(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    inputs: list[str] = typer.Argument(
        None, metavar="INPUT...", help="Inputs of the identity given by --id (files; texts for a text model)."
    ),
    gallery: Path = typer.Option(..., "--gallery", "-g"),
    identity: str = typer.Option(None, "--id", help="The identity to enrol INPUTs as."),
    folder: Path = typer.Option(None, "--folder", help="Enrol every class sub-folder as an identity."),
    documents: Path = typer.Option(
        None, "--documents", help="Text models: a JSONL ({id, text, metadata?}) or TSV (id<TAB>text) file."
    ),
    metadata: str = typer.Option(None, "--metadata", help="JSON object stored with the identity."),
    replace: bool = typer.Option(False, "--replace", help="Drop the identity's earlier templates."),
    template: str = typer.Option(
        "all", "--template", help="all: one template per input; mean: one per identity, the mean embedding."
    ),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Enrol an identity from one or more inputs, or a folder of class sub-folders."""
    from twinnet.errors import DataError
    from twinnet.gallery.cli_ops import enroll_documents, enroll_folder, enroll_inputs

    meta = _json_object(metadata, "--metadata")
    if template not in ("all", "mean"):
        raise DataError(f"--template: {template!r} is not one of all, mean")
    with _open_gallery(model_path, gallery, runtime) as g:
        if documents is not None:
            if template != "all":
                raise DataError("--template mean: a document is one text, its own template")
            report = enroll_documents(g, documents, replace=replace)
        elif folder is not None:
            report = enroll_folder(g, folder, replace=replace, template=template)
        elif identity and inputs:
            report = {identity: enroll_inputs(g, identity, inputs, meta, replace, template=template)}
        else:
            raise DataError("give --id ID with INPUTs, --folder DIR of class sub-folders, or --documents FILE")
        counts = g.count()
    if as_json:
        _print_json({"enrolled": report, **counts})
    else:
        n, k = sum(report.values()), len(report)
        out.print(
            f"enrolled {n} new template{'s' * (n != 1)} for {k} identit{'ies' if k != 1 else 'y'} "
            f"(inputs already enrolled are skipped, see above); gallery: {counts}"
        )


@gallery_app.command("identify")
@friendly_errors
def gallery_identify(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Files, or texts for a text model."),
    gallery: Path = typer.Option(..., "--gallery", "-g"),
    top_k: int = typer.Option(5, "--top-k", "-k"),
    threshold: float = typer.Option(None, "--threshold", help="Override the calibrated threshold (native scale)."),
    operating_point: str = typer.Option(None, "--operating-point", help=_OP_HELP),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Who is this? The top-k identities, or unknown when the best is beyond the threshold."""
    from twinnet.gallery.cli_ops import query_inputs

    _at_least("--top-k", top_k, 1)
    _finite("--threshold", threshold)
    with _open_gallery(model_path, gallery, runtime) as g:
        items, names = query_inputs(g, inputs)
        results = g.identify_batch(items, top_k, threshold, operating_point=operating_point)
    rows = [{"input": name, **r.to_dict()} for name, r in zip(names, results)]
    if as_json:
        _print_json(rows if len(rows) > 1 else rows[0])
        return
    for row in rows:
        best = row["identity"] or "[yellow]unknown[/]"
        key = "distance" if "distance" in (row["matches"] or [{}])[0] else "score"
        ranked = ", ".join(f"{m['identity']} ({m[key]:.3f})" for m in row["matches"])
        out.print(f"{row['input']}: {best} · top {top_k}: {ranked}")


@gallery_app.command("verify")
@friendly_errors
def gallery_verify(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    input_path: str = typer.Argument(..., metavar="INPUT", help="A file, or a text for a text model."),
    gallery: Path = typer.Option(..., "--gallery", "-g"),
    identity: str = typer.Option(..., "--id", help="The claimed identity."),
    threshold: float = typer.Option(None, "--threshold", help="Override the calibrated threshold (native scale)."),
    operating_point: str = typer.Option(None, "--operating-point", help=_OP_HELP),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Is INPUT the claimed identity? Score against its templates, and the decision."""
    _finite("--threshold", threshold)
    with _open_gallery(model_path, gallery, runtime) as g:
        result = g.verify(input_path, identity, threshold, operating_point).to_dict()
    if as_json:
        _print_json(result)
    else:
        out.print(result)


@gallery_app.command("remove")
@friendly_errors
def gallery_remove(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    gallery: Path = typer.Option(..., "--gallery", "-g"),
    identity: str = typer.Option(..., "--id"),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove an identity and its templates."""
    with _open_gallery(model_path, gallery, runtime) as g:
        removed = g.remove(identity)
    _print_json({"identity": identity, "templates_removed": removed}) if as_json else out.print(
        f"removed {identity} ({removed} templates)"
    )


@gallery_app.command("list")
@friendly_errors
def gallery_list(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    gallery: Path = typer.Option(..., "--gallery", "-g"),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the enrolled identities."""
    with _open_gallery(model_path, gallery, runtime) as g:
        items, counts = g.list(), g.count()
    if as_json:
        _print_json({"identities": items, "counts": counts})
        return
    table = Table(title=f"{gallery}: {counts['identities']} identities, {counts['templates']} templates")
    for col in ("identity", "templates", "metadata"):
        table.add_column(col)
    for item in items:
        table.add_row(item["id"], str(item["templates"]), json.dumps(item["metadata"]))
    out.print(table)


def _json_object(raw: str | None, option: str) -> dict[str, Any] | None:
    from twinnet.errors import DataError

    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"{option}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise DataError(f"{option}: must be a JSON object")
    return value


@app.command()
@friendly_errors
def serve(
    model_path: Path = typer.Argument(..., metavar="MODEL"),
    gallery: Path = typer.Option(None, "--gallery", "-g", help="Gallery for /identify and /enroll (created if new)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    api_key_file: Path = typer.Option(None, "--api-key-file", help="API keys, one per line (or $TWINNET_API_KEYS)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No API key (only on a loopback address)."),
    max_body_mb: float = typer.Option(10.0, "--max-body-mb"),
    max_megapixels: float = typer.Option(40.0, "--max-megapixels"),
    batch_window_ms: float = typer.Option(2.0, "--batch-window-ms", help="How long to gather requests into a batch."),
    operating_point: str = typer.Option(
        None, "--operating-point", help="The operating point answers decide at unless a request names another."
    ),
    runtime: str = typer.Option("torch", "--runtime", help=_RUNTIME_HELP),
    stats_log: Path = typer.Option(
        None, "--stats-log", help="Append, per window, the distribution of the scores answered (one JSON line)."
    ),
    stats_window_s: float = typer.Option(60.0, "--stats-window-s", help="The window of --stats-log and /stats."),
) -> None:
    """Serve MODEL (and a gallery) over HTTP: /verify /identify /enroll /identities /embed /stats /health /docs."""
    from twinnet.serve import ServiceSettings, read_api_keys
    from twinnet.serve import serve as run_service

    settings = ServiceSettings(
        api_keys=read_api_keys(api_key_file), no_auth=no_auth, max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_pixels=int(max_megapixels * 1_000_000), batch_window_ms=batch_window_ms, operating_point=operating_point,
        stats_log=stats_log, stats_window_s=stats_window_s,
    )  # fmt: skip
    run_service(model_path, gallery, host, port, settings, runtime=runtime)


@app.command("export")
@friendly_errors
def export(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Saved model (or run) directory."),
    export_format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out_dir: Path = typer.Option(..., "--out", help="Directory to write (a new one, or an earlier export)."),
    quantize: str = typer.Option(
        None, "--quantize", help="int8: ONNX Runtime dynamic quantisation (changes the embeddings; off unless asked)."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Export MODEL's encoders (and learned comparator) to ONNX, with its config, calibration and
    preprocessing: serve it with --runtime onnx, without the torch weights. A tracking model exports
    its backbone; its head (a comparator of feature maps) keeps its weights for the onnx runtime."""
    from twinnet.onnx.export import export_path

    meta = export_path(model_path, out_dir, format=export_format, quantize=quantize, opset=opset)
    if as_json:
        _print_json({"out": str(out_dir), **meta})
        return
    for role, info in meta["graphs"].items():
        worst = max(info["parity_max_abs_error"].values())
        out.print(f"{role}: {info['file']} ({info['dtype']}; max |ONNX − PyTorch| {worst:.2g} before quantisation)")
    head = meta.get("comparator")
    if head is not None:
        out.print(f"comparator {head['name']}: compares feature maps, no graph; the onnx runtime runs it in PyTorch"
                  + (f" from {head['weights']}" if head["weights"] else ""))  # fmt: skip
    out.print(f"exported {model_path} to {out_dir} (load it with --runtime onnx)")


@app.command()
def version() -> None:
    """Print the twinnet version."""
    from twinnet import __version__

    out.print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
