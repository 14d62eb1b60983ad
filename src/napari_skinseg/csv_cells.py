"""Text cells of the CSV files skinseg writes, made safe to open in a spreadsheet.

Excel, LibreOffice and Google Sheets run a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return as a formula (CSV injection), and an image file, whose name becomes the
``id`` cell, may be called ``=HYPERLINK(...).jpg``. :func:`escape_cell` puts a single quote before
such text (OWASP's advice: spreadsheets then show it as text), and before text that already starts
with one, so that :func:`unescape_cell` undoes exactly that: ids read back from a file (a rerun
keeping its rows) are the ids written. Only text cells are escaped; numbers, negative ones
included, are written as numbers.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def escape_cell(text: str) -> str:
    """``text`` as a CSV cell that no spreadsheet runs as a formula."""
    return QUOTE + text if text.startswith((*FORMULA_STARTS, QUOTE)) else text


def unescape_cell(text: str) -> str:
    """The text :func:`escape_cell` was given. A cell that escape_cell cannot have written (a
    quote not followed by a quote or a formula character) is kept as it is, and so are cells
    of files written before escaping: their ids still match."""
    if text.startswith(QUOTE) and text[1:].startswith((*FORMULA_STARTS, QUOTE)):
        return text[1:]
    return text
