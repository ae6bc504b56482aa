"""Untrusted text, made safe for each place it is shown: the one helper.

Client names, library names, commands, instance names, server replies, error
texts and file names come from whoever can connect to a server or hand over a
file. They are data: never Rich markup, matplotlib mathtext, Markdown / HTML or
shell code. Every place that shows such a string passes it through one of
these functions, chosen by where it goes:

    printable(s)     one visible line: control characters (newline, ESC, DEL, C1, bidi
                     overrides) written as escapes, cut to a bounded length
    for_rich(s)      Rich markup (console.print f-strings, table titles)
    rich_text(s)     a Rich `Text` (table cells): never parsed as markup
    for_figure(s)    matplotlib text (titles, labels, legends): never parsed as math
    for_html(s)      HTML element text and attribute values
    for_markdown(s)  Markdown (table cells, prose), safe for HTML inside Markdown too
    for_shell(s)     one shell word, to paste; shell_line(*words) a whole command

Each one costs time and memory bounded by `limit` (only the first characters of a
long value are read), so a 500 MB name costs no more than a short one. `<`, `>` and `&` are left to `html.escape`, never backslashed.
"""

from __future__ import annotations

import html
import re
import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

__all__ = [
    "SHOWN_CHARS",
    "for_figure",
    "for_html",
    "for_markdown",
    "for_rich",
    "for_shell",
    "printable",
    "rich_text",
    "shell_line",
]

SHOWN_CHARS = 200  # the most characters of one untrusted value shown in one place

# C0 controls, DEL, C1 controls, and Unicode's invisible direction / line controls
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# inline markers: emphasis, code, links, cells, strikes; `_` inside a word is no marker
_MARKDOWN = re.compile(r"([\\`*\[\]|~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")
_BACKTICKS = re.compile("`+")
# block markers at the start of a line: a heading / list item (marker then a space), an ordered
# item (1. / 1) then a space), a rule or setext underline (a line of - or =); a quote's `>` is
# already `&gt;`, which opens no quote
_MARKDOWN_START = re.compile(r"^(\s*|\s*\d+)([#+-](?=\s|$)|[.)](?<=\d[.)])(?=\s|$)|[-=](?=[-=]*\s*$))")


def _visible(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` as one line of visible text of at most about `limit` characters.

    Control characters become escapes (`\\n`, `\\x1b`, `\\u202e`); a longer value is
    cut and ends with `…`. Only the first `limit` characters are read.
    """
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    head = text[:limit]
    if _CONTROL.search(head):
        head = _CONTROL.sub(lambda m: _visible(m.group()), head)
    return head + "…" if cut else head


def for_rich(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` to put inside a Rich markup string: shown as written, never as a style or link."""
    from rich.markup import escape

    return escape(printable(value, limit))


def rich_text(value: object, limit: int = SHOWN_CHARS) -> Text:
    """`value` as a Rich `Text` (for table cells): never parsed as markup."""
    from rich.text import Text

    return Text(printable(value, limit))


def for_figure(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` for matplotlib text: every `$` escaped, so it is never read as mathtext."""
    return printable(value, limit).replace("$", r"\$")


def for_html(value: object, limit: int | None = None) -> str:
    """`value` as HTML text or a quoted attribute value (`limit=None`: whole, newlines kept)."""
    text = str(value) if limit is None else printable(value, limit)
    return html.escape(text, quote=True)


def for_markdown(value: object, limit: int = SHOWN_CHARS, *, code: bool = False) -> str:
    """`value` for a Markdown table cell or paragraph: no emphasis, link, code, HTML or cell break.

    With `code`, a code span (outside tables): its fence is longer than any run of
    backticks inside, so the value can never close it; HTML in a code span is text.
    """
    if code:
        text = printable(value, limit)
        fence = "`" * (max((len(m) for m in _BACKTICKS.findall(text)), default=0) + 1)
        return f"{fence} {text} {fence}" if text.startswith("`") or text.endswith("`") else f"{fence}{text}{fence}"
    text = _MARKDOWN.sub(r"\\\1", printable(value, limit))
    text = _MARKDOWN_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text)
    return html.escape(text, quote=False)


def for_shell(value: object) -> str:
    """`value` as one POSIX shell word that pastes as exactly `value` and runs nothing.

    Printable text is single-quoted (`shlex.quote`); text with control characters (a
    newline would end the pasted line) is written as a `$'...'` word with escapes,
    which bash, zsh and ksh read back exactly.
    """
    text = str(value)
    if not _CONTROL.search(text):
        return shlex.quote(text)
    inner = "".join(
        _visible(c) if _CONTROL.match(c) else "\\'" if c == "'" else "\\\\" if c == "\\" else c
        for c in text
    )
    return f"$'{inner}'"


def shell_line(*words: object) -> str:
    """A command line to paste: every word quoted by `for_shell`."""
    return " ".join(for_shell(w) for w in words)
