"""Parsers: CLIENT LIST and INFO text -> typed Polars tables (vectorized, lazy-friendly)."""

from __future__ import annotations

from clientscope.parse.client_list import parse_client_list, split_rejects
from clientscope.parse.info import parse_info
from clientscope.parse.raw import parse_raw

__all__ = ["parse_client_list", "parse_info", "parse_raw", "split_rejects"]
