"""Strings from records or a run's meta, made harmless for the file they go into. One place.

- Markdown table cells (summary.md, audit.md): `markdown_cell`; running Markdown text (the
  headline of summary.md): `markdown_text`.
- CSV cells a spreadsheet would run as a formula (comparisons.csv): `csv_neutralise` on
  writing, `csv_restore` on reading, so the round trip is exact.
- HTML (summary.html): `html.escape` on every cell, header and text in reports/render.py;
  Markdown extra files (audit.md, whose cells are `markdown_cell` text) through markdown-it-py
  with raw HTML, links and images off (render.markdown_html).
- Terminal lines (`python -m reports show`, pytest's summary): `terminal_text`.
- Heat-map labels (matplotlib would parse "$...$" as mathtext): `plot_label`.
"""

from __future__ import annotations

import re

# A cell starting with one of these is a formula (or a formula prefix) to a spreadsheet.
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Quotes already in front are counted too: "'=x" is written "''=x", so reading strips one.
_CSV_RISKY = re.compile(r"'*[=+\-@\t\r]")
_NEWLINE = re.compile(r"\r\n|[\r\n]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Inline Markdown: code spans, emphasis, links, strike-through (GitHub), and the escape itself.
_MD_INLINE = re.compile(r"([\\`*_\[\]~])")


def markdown_cell(value) -> str:
    """`value` as the text of one Markdown table cell: no raw HTML, no cell breaks.

    & < > become entities, | becomes \\|, a newline a space; the result is stripped.
    """
    text = _NEWLINE.sub(" ", str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").strip()


def markdown_text(value) -> str:
    """`value` as literal text in a Markdown paragraph or list item: markdown_cell, and
    \\ ` * _ [ ] ~ backslash-escaped, so "E8*E9" or "dE_dO" never turn into emphasis,
    code or links."""
    return markdown_cell(_MD_INLINE.sub(r"\\\1", str(value)))


def csv_neutralise(text: str) -> str:
    """Prefix one ' to a cell a spreadsheet would execute (=, +, -, @, tab or CR first)."""
    return "'" + text if _CSV_RISKY.match(text) else text


def csv_restore(text: str) -> str:
    """Undo csv_neutralise: drop the one ' it added (only when a trigger follows the quotes)."""
    return text[1:] if text.startswith("'") and _CSV_RISKY.match(text, 1) else text


def terminal_text(value) -> str:
    """`value` on one terminal line: newlines and tabs become spaces, other control
    characters (an escape sequence would move the cursor or clear the screen) \\xNN."""
    text = _NEWLINE.sub(" ", str(value)).replace("\t", " ")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def plot_label(value) -> str:
    """`value` as literal matplotlib text: a "$" would start mathtext (and may not parse)."""
    return str(value).replace("$", "\\$")
