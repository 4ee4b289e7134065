"""arxiv_embed.subjects: aliases, legacy codes, unknown codes, order and repeats."""

from __future__ import annotations

import pytest

from arxiv_embed.subjects import ALIASES, KNOWN, LEGACY, archive, canonical, parse_categories


@pytest.mark.parametrize(
    ("code", "subject"),
    [
        ("cs.NA", "math.NA"),
        ("math.IT", "cs.IT"),
        ("cs.SY", "eess.SY"),
        ("math.MP", "math-ph"),
        ("stat.TH", "math.ST"),
        ("q-fin.EC", "econ.GN"),
        ("alg-geom", "math.AG"),
        ("funct-an", "math.FA"),
        ("solv-int", "nlin.SI"),
        ("cmp-lg", "cs.CL"),
        ("chao-dyn", "nlin.CD"),
        ("supr-con", "cond-mat.supr-con"),
        ("cs.LG", "cs.LG"),
        ("hep-th", "hep-th"),
        ("cond-mat.str-el", "cond-mat.str-el"),
        ("astro-ph", "astro-ph"),  # legacy archive, valid as it is
    ],
)
def test_canonical(code: str, subject: str) -> None:
    assert canonical(code) == subject


@pytest.mark.parametrize("code", ["cs.XX", "CS.LG", "math", "foo-bar", "", "cs.lg", "physics.optic"])
def test_unknown_codes(code: str) -> None:
    assert canonical(code) is None


def test_every_mapping_ends_on_a_known_canonical_subject() -> None:
    for target in [*ALIASES.values(), *LEGACY.values()]:
        assert target in KNOWN or target == "math-ph"
        assert canonical(target) == target  # already canonical: mapping twice changes nothing


def test_parse_categories_keeps_order_drops_repeats_and_unknown() -> None:
    assert parse_categories("math.IT cs.IT cs.LG bogus.XX stat.ML cs.LG") == ["cs.IT", "cs.LG", "stat.ML"]
    assert parse_categories("  q-fin.EC\teess.SY cs.SY\n") == ["econ.GN", "eess.SY"]
    assert parse_categories("bogus nonsense") == []
    assert parse_categories("") == []


def test_archive() -> None:
    assert archive("cs.LG") == "cs"
    assert archive("hep-th") == "hep-th"
    assert archive("cond-mat.str-el") == "cond-mat"
    assert archive("physics.atom-ph") == "physics"
