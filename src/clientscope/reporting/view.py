"""Moved to `clientscope.window` (the window every command shares); kept while `export` moves."""

from clientscope.window import DatasetView, parse_time, select

__all__ = ["DatasetView", "parse_time", "select"]
