"""Analyses: pure functions over a capture dataset, one per command.

Each takes a `Dataset` (or a path) and returns a frame or a frozen result with
`to_dict()` (for --json) and `_repr_html_()` (for notebooks). None of them print.
"""

from __future__ import annotations

from clientscope.analysis.leaks import LeakReport, leaks

__all__ = ["LeakReport", "leaks"]
