"""Text of a paper as the models see it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal

TextMode = Literal["title_abstract", "abstract"]

_WS = re.compile(r"\s+")


def clean_whitespace(text: str) -> str:
    """Collapse runs of whitespace (line breaks included) to one space and strip the ends."""
    return _WS.sub(" ", text).strip()


# Control characters (C0, DEL, C1: NUL and the like) become spaces; format characters that render as nothing
# (zero-width space / joiners, word joiner, BOM, soft hyphen, bidi marks, embeddings, overrides and isolates,
# the Arabic letter mark, the Mongolian vowel separator, the deprecated format controls) are removed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate on its own (valid JSON ``"\\ud800"``, not encodable as UTF-8)."""
    return _SURROGATE.search(text) is not None


def clean_text(text: str) -> str:
    """Text as the models should see it: Unicode NFC, control characters as spaces, invisible format characters
    removed, whitespace (any Unicode space, line breaks included) collapsed to one space, ends stripped."""
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", _CONTROL.sub(" ", text))
    return clean_whitespace(text)


def cap_text(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at the last space before the limit when there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


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
