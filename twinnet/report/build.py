"""``twinnet report``: run a protocol, let every registered section draw what it has to show, and
write one self-contained ``index.html`` (text, tables, and the PNGs beside it by relative link)."""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Any

from twinnet._version import __version__
from twinnet.data.sources import Dataset, ReadOptions, read_dataset
from twinnet.evaluate import check_finite_weights
from twinnet.model import AnyTwin
from twinnet.protocols.base import build_protocol
from twinnet.report.sections import SECTIONS, ReportContext, Section, section_names

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}
figure img{max-width:520px;border:1px solid #eee}figcaption{font-size:.85em;color:#555;max-width:520px}
.meta{color:#666;font-size:.9em}"""


def render_html(title: str, meta: str, sections: list[Section]) -> str:
    """The report page: one ``<section>`` per section, images by relative link."""
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p class='meta'>{html.escape(meta)}</p>"
    ]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(t)}</p>" for t in s.text]
        for header, rows in s.tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        for name, caption in s.images:
            parts.append(
                f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def find_run_dir(model_path: str | Path | None) -> Path | None:
    """The training run a saved model came from: ``RUN`` itself or the parent of ``RUN/model``,
    when it holds ``metrics.jsonl``."""
    if model_path is None:
        return None
    path = Path(model_path)
    for candidate in (path, path.parent):
        if (candidate / "metrics.jsonl").is_file():
            return candidate
    return None


def build_report(
    model: AnyTwin,
    data: str | Path | Dataset,
    out: str | Path,
    protocol: str = "verification",
    params: dict[str, Any] | None = None,
    *,
    format: str = "auto",
    options: ReadOptions | None = None,
    run_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Write the report of ``model`` on ``data`` measured by ``protocol`` into the folder ``out``;
    returns the path of its ``index.html``. ``run_dir`` (a training run) adds the training curves."""
    evaluator = build_protocol(protocol, params, field="--protocol")
    check_finite_weights(model)
    dataset = (
        data
        if isinstance(data, Dataset)
        else read_dataset(data, model.input_spec("a"), format, options, field="--format")
    )
    evaluator.check_data(dataset)
    result = evaluator.evaluate(model, dataset)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(model, dataset, evaluator, result, folder, Path(run_dir) if run_dir else None)
    sections = [s for s in (SECTIONS.get(name)(ctx) for name in section_names()) if s is not None]
    meta = (
        f"twinnet {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S')}; protocol {protocol}"
        f"{' ' + str(params) if params else ''}; data {dataset.source or 'given'}"
    )
    page = render_html(title or f"twinnet report: {protocol}", meta, sections)
    index = folder / "index.html"
    partial = folder / f".index.html.{os.getpid()}.partial"
    partial.write_text(page, encoding="utf-8")
    partial.replace(index)
    return index
