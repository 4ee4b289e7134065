"""arXiv subject codes: the taxonomy, its aliases and legacy codes, and a paper's primary subject."""

from __future__ import annotations

_GROUPS: dict[str, str] = {
    "cs": "AI AR CC CE CG CL CR CV CY DB DC DL DM DS ET FL GL GR GT HC IR IT LG LO MA MM MS NA NE NI OH OS PF PL "
    "RO SC SD SE SI SY",
    "econ": "EM GN TH",
    "eess": "AS IV SP SY",
    "math": "AC AG AP AT CA CO CT CV DG DS FA GM GN GR GT HO IT KT LO MG MP NA NT OA OC PR QA RA RT SG SP ST",
    "astro-ph": "CO EP GA HE IM SR",
    "cond-mat": "dis-nn mes-hall mtrl-sci other quant-gas soft stat-mech str-el supr-con",
    "nlin": "AO CD CG PS SI",
    "physics": "acc-ph ao-ph app-ph atm-clus atom-ph bio-ph chem-ph class-ph comp-ph data-an ed-ph flu-dyn gen-ph "
    "geo-ph hist-ph ins-det med-ph optics plasm-ph pop-ph soc-ph space-ph",
    "q-bio": "BM CB GN MN NC OT PE QM SC TO",
    "q-fin": "CP EC GN MF PM PR RM ST TR",
    "stat": "AP CO ME ML OT TH",
}
# Archives without subject classes, current ("hep-th") and legacy ("astro-ph", "cond-mat", "q-bio" before
# their subdivision): valid as they are.
_PLAIN_ARCHIVES = [
    "gr-qc",
    "hep-ex",
    "hep-lat",
    "hep-ph",
    "hep-th",
    "math-ph",
    "nucl-ex",
    "nucl-th",
    "quant-ph",
    "astro-ph",
    "cond-mat",
    "q-bio",
]

# arXiv's canonical names for subject classes that have two names (arxiv-base taxonomy "aliases").
ALIASES: dict[str, str] = {
    "cs.NA": "math.NA",
    "math.IT": "cs.IT",
    "cs.SY": "eess.SY",
    "math.MP": "math-ph",
    "stat.TH": "math.ST",
    "q-fin.EC": "econ.GN",
}
# Archives of the 1990s that arXiv later merged into today's subject classes.
LEGACY: dict[str, str] = {
    "alg-geom": "math.AG",
    "funct-an": "math.FA",
    "q-alg": "math.QA",
    "dg-ga": "math.DG",
    "solv-int": "nlin.SI",
    "chao-dyn": "nlin.CD",
    "patt-sol": "nlin.PS",
    "adap-org": "nlin.AO",
    "comp-gas": "nlin.CG",
    "cmp-lg": "cs.CL",
    "atom-ph": "physics.atom-ph",
    "chem-ph": "physics.chem-ph",
    "plasm-ph": "physics.plasm-ph",
    "acc-phys": "physics.acc-ph",
    "ao-sci": "physics.ao-ph",
    "bayes-an": "physics.data-an",
    "supr-con": "cond-mat.supr-con",
    "mtrl-th": "cond-mat.mtrl-sci",
}

KNOWN: frozenset[str] = frozenset(
    [f"{group}.{code}" for group, codes in _GROUPS.items() for code in codes.split()]
    + _PLAIN_ARCHIVES
    + list(LEGACY)
)


def canonical(category: str) -> str | None:
    """The canonical subject of one arXiv category code, or None if the code is not an arXiv category."""
    if category not in KNOWN:
        return None
    category = LEGACY.get(category, category)
    return ALIASES.get(category, category)


def parse_categories(categories: str) -> list[str]:
    """Canonical subjects of a space-separated ``categories`` field, in order, without repeats.

    Unknown codes are left out; an empty list means the paper has no valid category.
    """
    subjects: list[str] = []
    for code in categories.split():
        subject = canonical(code)
        if subject is not None and subject not in subjects:
            subjects.append(subject)
    return subjects


def archive(subject: str) -> str:
    """The archive of a subject: ``cs`` for ``cs.LG``, ``hep-th`` for ``hep-th``."""
    return subject.split(".", 1)[0]
