"""The leaderboard page of ``mrg benchmark``: one self-contained HTML file, one sortable table per dataset.

Same rules as the report page: no external resources, a strict Content-Security-Policy, readable without
JavaScript (the script only adds sorting by a column's mean). Each cell shows the mean over seeds, the half width of
its 95% t-interval, the pooled test-bootstrap interval and the paired p-value against the reference system; the
number a column sorts by is in the cell's ``data-value``.
"""

from __future__ import annotations

import html
from typing import Any

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0 2em; }
th, td { border-bottom: 1px solid #ddd; padding: .35em .6em; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; position: sticky; top: 0; }
thead button { font: inherit; font-weight: 600; border: 0; background: none; cursor: pointer; padding: 0; }
.ci, .p { color: #666; font-size: 12px; display: block; }
tr.reference td { background: #f7fbff; }
.sig { color: #b00; }
.kind { color: #888; font-size: 12px; }
"""

_SCRIPT = """
document.querySelectorAll('table.leaderboard').forEach(function (table) {
  table.querySelectorAll('thead th[data-sort]').forEach(function (th, index) {
    var button = document.createElement('button');
    button.textContent = th.textContent; th.textContent = ''; th.appendChild(button);
    button.addEventListener('click', function () {
      var column = th.cellIndex, descending = th.getAttribute('aria-sort') !== 'descending';
      table.querySelectorAll('thead th').forEach(function (other) { other.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
      var rows = Array.from(table.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = parseFloat(a.cells[column].dataset.value), y = parseFloat(b.cells[column].dataset.value);
        if (isNaN(x)) return 1; if (isNaN(y)) return -1;
        return descending ? y - x : x - y;
      });
      rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return '<td data-value="">&ndash;</td>'
    parts = [f"{cell['mean']:.3f}"]
    if cell.get("ci_low") is not None:
        parts.append(f" &plusmn; {(cell['ci_high'] - cell['ci_low']) / 2:.3f}")
    if cell.get("test_ci_low") is not None:
        parts.append(f'<span class="ci">[{cell["test_ci_low"]:.3f}, {cell["test_ci_high"]:.3f}]</span>')
    p_value = cell.get("p_value")
    if p_value is not None:
        parts.append(f'<span class="p{" sig" if p_value < 0.05 else ""}">p = {p_value:.3f}</span>')
    return f'<td data-value="{cell["mean"]!r}">{"".join(parts)}</td>'


def render_leaderboard_html(record: dict[str, Any]) -> str:
    """The leaderboard page of a ``mrg benchmark`` record (``leaderboard.json``)."""
    columns = record["columns"]
    sections = []
    for dataset in dict.fromkeys(r["dataset"] for r in record["rows"]):
        head = "".join(f'<th scope="col" data-sort="1">{_e(record["column_names"][c])}</th>' for c in columns)
        body = []
        for row in (r for r in record["rows"] if r["dataset"] == dataset):
            css = ' class="reference"' if row["system"] == record["reference"] else ""
            body.append(f'<tr{css}><td>{_e(row["system"])} <span class="kind">{_e(row["kind"])}, {row["runs"]} '
                        f'run(s)</span></td>' + "".join(_cell(row["metrics"][c]) for c in columns) + "</tr>")
        sections.append(f'<h2>{_e(dataset)}</h2><table class="leaderboard"><thead><tr><th scope="col">system</th>{head}'
                        f'</tr></thead><tbody>{"".join(body)}</tbody></table>')
    method = record.get("method", {})
    notes = "".join(f"<li>{_e(k.replace('_', ' '))}: {_e(v)}</li>" for k, v in method.items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_e(record['title'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(record['title'])}</h1><p>Seeds {_e(record['seeds'])}; reference <b>{_e(record['reference'])}</b>; "
        f"created {_e(record['created'])}.</p>{''.join(sections)}<ul>{notes}</ul>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
