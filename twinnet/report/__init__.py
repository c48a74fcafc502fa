"""Reports a person would rather look at (``twinnet report``, ``twinnet evaluate --report``).

:mod:`~twinnet.report.calc` holds the pure figures, :mod:`~twinnet.report.plots` draws them
(matplotlib, Agg), :mod:`~twinnet.report.sections` decides what each section shows (one registered
function per section), :mod:`~twinnet.report.build` runs the protocol and writes ``index.html``.
Needs the ``report`` extra (matplotlib).
"""

from twinnet.report.build import build_report, find_run_dir, render_html
from twinnet.report.sections import SECTIONS, ReportContext, Section, register_section

__all__ = ["SECTIONS", "ReportContext", "Section", "build_report", "find_run_dir", "register_section", "render_html"]
