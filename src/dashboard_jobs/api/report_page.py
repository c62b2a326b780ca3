"""The HTML page of a parent report: its summary and an inline SVG chart of the subject averages.

The page is rendered again from the report's stored payload, so it follows the reader's
language whatever the language the report was generated in.
"""

from __future__ import annotations

from html import escape
from typing import Any

from dashboard_jobs.domain.report_render import format_month, format_number, render_summary_md, subject_name

CHART_LABEL_WIDTH = 140
CHART_BAR_WIDTH = 300
CHART_ROW_HEIGHT = 28
MAX_SCORE = 20

PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;"
    "color:#1f2933;line-height:1.5}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.5rem}"
    "svg text{font-size:13px;fill:#1f2933}"
)


def render_report_page(payload: dict[str, Any], language: str) -> str:
    """Return a complete HTML document of the report in ``language`` (fr or en)."""
    title = _page_title(payload, language)
    body = markdown_to_html(render_summary_md(payload, language))
    chart = subject_chart_svg(payload["kpis"]["progress"]["subjects"], language)
    chart_section = ""
    if chart:
        heading = "Average by subject" if language == "en" else "Moyenne par matière"
        chart_section = f"<section><h2>{heading}</h2>{chart}</section>"
    return (
        f'<!DOCTYPE html><html lang="{language}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{PAGE_STYLE}</style></head>"
        f"<body><main>{body}{chart_section}</main></body></html>"
    )


def subject_chart_svg(subjects: list[dict[str, Any]], language: str) -> str:
    """Return a horizontal bar chart of each subject's average out of 20, or "" without any average."""
    rows = [subject for subject in subjects if subject["average"] is not None]
    if not rows:
        return ""
    width = CHART_LABEL_WIDTH + CHART_BAR_WIDTH + 60
    height = CHART_ROW_HEIGHT * len(rows) + 8
    description = "Average score per subject, out of 20" if language == "en" else "Moyenne par matière, sur 20"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{description}</title>'
    ]
    for index, subject in enumerate(rows):
        parts.append(_chart_row(index, subject, language))
    parts.append("</svg>")
    return "".join(parts)


def markdown_to_html(markdown: str) -> str:
    """Convert the Markdown subset the report uses (headings, lists, italic lines, paragraphs)."""
    html: list[str] = []
    in_list = False
    for line in markdown.splitlines():
        if line.startswith("- "):
            if not in_list:
                html.append("<ul>")
                in_list = True
            html.append(f"<li>{escape(line[2:])}</li>")
            continue
        if in_list:
            html.append("</ul>")
            in_list = False
        html.append(_block(line))
    if in_list:
        html.append("</ul>")
    return "".join(html)


def _block(line: str) -> str:
    if not line.strip():
        return ""
    if line.startswith("## "):
        return f"<h2>{escape(line[3:])}</h2>"
    if line.startswith("# "):
        return f"<h1>{escape(line[2:])}</h1>"
    if len(line) > 2 and line.startswith("_") and line.endswith("_"):
        return f"<p><em>{escape(line[1:-1])}</em></p>"
    return f"<p>{escape(line)}</p>"


def _chart_row(index: int, subject: dict[str, Any], language: str) -> str:
    y = index * CHART_ROW_HEIGHT + 4
    bar = round(CHART_BAR_WIDTH * min(subject["average"], MAX_SCORE) / MAX_SCORE)
    value = format_number(subject["average"], language)
    text_y = y + CHART_ROW_HEIGHT // 2 + 4
    return (
        f'<text x="0" y="{text_y}">{escape(subject_name(subject["subject"], language))}</text>'
        f'<rect x="{CHART_LABEL_WIDTH}" y="{y + 4}" width="{bar}" height="{CHART_ROW_HEIGHT - 10}" fill="#3b82f6"/>'
        f'<text x="{CHART_LABEL_WIDTH + bar + 6}" y="{text_y}">{value}/20</text>'
    )


def _page_title(payload: dict[str, Any], language: str) -> str:
    name = payload["student"]["first_name"]
    month = format_month(payload["period"], language)
    return f"Report for {name}, {month}" if language == "en" else f"Rapport de {name}, {month}"
