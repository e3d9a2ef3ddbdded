"""``mrg report``: one self-contained HTML page from training runs and evaluations.

The page holds the metric tables (with bootstrap intervals when present) and the protocol, training and
validation curves as inline SVG with the best checkpoint marked, and a sortable, filterable per-study
table with image thumbnails, both reports, their CheXpert labels (disagreements highlighted) and
per-study scores. Nothing on it is fetched from a network: CSS, JavaScript, charts and images are inline.

Public API:
    build_report(dirs, out, ...) -> ReportResult   write the page (atomically)
    discover(dirs) -> ReportInputs                 classify and read the folders
    line_chart(series, ...) -> str                 an inline-SVG line chart
"""

from __future__ import annotations

from mrg.viewer.build import ReportResult, build_report
from mrg.viewer.charts import Series, line_chart
from mrg.viewer.inputs import EvalInputs, ReportInputs, RunInputs, discover

__all__ = ["EvalInputs", "ReportInputs", "ReportResult", "RunInputs", "Series", "build_report", "discover", "line_chart"]
