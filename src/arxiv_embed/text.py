"""Text of a paper as the models see it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

TextMode = Literal["title_abstract", "abstract"]

_WS = re.compile(r"\s+")


def clean_whitespace(text: str) -> str:
    """Collapse runs of whitespace (line breaks included) to one space and strip the ends."""
    return _WS.sub(" ", text).strip()


def paper_text(title: str, abstract: str, mode: TextMode = "title_abstract") -> str:
    """The input text of one paper: ``"title. abstract"`` or the abstract alone."""
    if mode == "abstract":
        return abstract
    if mode == "title_abstract":
        title = title.rstrip()
        sep = " " if title.endswith((".", "?", "!")) else ". "
        return f"{title}{sep}{abstract}" if title else abstract
    raise ValueError(f"unknown text mode {mode!r}; expected 'title_abstract' or 'abstract'")


def papers_texts(papers: Mapping[str, Any], mode: TextMode = "title_abstract") -> list[str]:
    """The input texts of a table of papers (``title`` and ``abstract`` columns), in row order."""
    return [paper_text(t, a, mode) for t, a in zip(papers["title"], papers["abstract"], strict=True)]
