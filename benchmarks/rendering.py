"""Markdown rendering of benchmark results, shared by the runner (`python -m benchmarks all`) and every benchmark
script, so both print the same tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def format_cell(value: Any) -> str:
    """A table cell: 3 significant digits for floats, '—' for missing, compact JSON for containers."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, separators=(",", ":"), default=str)
        value = text if len(text) <= 80 else text[:77] + "..."
    # A pipe would end the cell; a newline would end the row.
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows (dicts) as a Markdown table; columns in first-seen order across all rows."""
    if not rows:
        return "_(no rows)_\n"
    columns: list[str] = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(format_cell(column) for column in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def follows_convention(data: Any) -> bool:
    """True for `{"title": str, "rows": [dict...], ...}` JSON (goal and notes optional)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("title"), str)
        and isinstance(data.get("rows"), list)
        and all(isinstance(row, dict) for row in data["rows"])
    )


def _render_table_section(data: dict[str, Any], level: int) -> str:
    parts = [f"{'#' * level} {data['title']}\n"]
    if data.get("goal"):
        parts.append(f"Goal: {data['goal']}\n")
    parts.append(markdown_table(data["rows"]))
    notes = [note for note in data.get("notes") or [] if note]
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes) + "\n")
    return "\n".join(parts)


def render_generic(data: Any, name: str, level: int = 3) -> str:
    """A JSON that does not follow the convention: its own Markdown if it has one, else its lists and scalars."""
    title = name
    if isinstance(data, dict) and isinstance(data.get("benchmark"), str):
        title = data["benchmark"]
    parts = [f"{'#' * level} {title}\n"]
    if isinstance(data, dict) and isinstance(data.get("markdown"), str):
        parts.append(data["markdown"].strip() + "\n")
        return "\n".join(parts)
    if isinstance(data, list):
        data = {"results": data}
    if not isinstance(data, dict):
        parts.append(f"`{format_cell(data)}`\n")
        return "\n".join(parts)
    scalars = {
        key: value
        for key, value in data.items()
        if not isinstance(value, (dict, list)) and key != "benchmark"
    }
    if scalars:
        parts.append("\n".join(f"- {key}: {format_cell(value)}" for key, value in scalars.items()) + "\n")
    for key, value in data.items():
        if key == "machine":  # RESULTS.md has its own machine section
            continue
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            parts.append(f"{key}:\n\n" + markdown_table(value))
        elif isinstance(value, list):
            parts.append(f"- {key}: {format_cell(value)}\n")
        elif isinstance(value, dict) and value:
            parts.append(f"{key}:\n\n" + markdown_table([{"key": k, "value": v} for k, v in value.items()]))
    return "\n".join(parts)


def render_result(data: Any, name: str = "benchmark", level: int = 3) -> str:
    """Markdown for one benchmark's JSON: the convention's tables, or the generic rendering."""
    if not follows_convention(data):
        return render_generic(data, name, level)
    parts = [_render_table_section(data, level)]
    for table in data.get("tables") or []:
        if follows_convention(table):
            parts.append(_render_table_section(table, level))
    return "\n".join(parts)
