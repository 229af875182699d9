"""Person names and text as the query layer folds and matches them (no SQL).

This module owns the three ways a person name (PN) is matched
(``docs/query.md``): per component group ignoring case, and with fuzzy
matching also ignoring accents and matching any name component by prefix.
It also owns how a DICOM ``*``/``?`` wildcard filter becomes a Python
regular expression.  Pure Python, imported by the write path (the fuzzy
keys the store writes), the query layer and revision 0003 (which fills them
in for instances stored before it).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

#: Separates the tokens of a fuzzy key (``patient_name_fuzzy``): each token
#: starts with it, so "a token starts with X" is ``LIKE '%<SEP>X%'``.
SEP = "\x1f"
#: Inside a name component, what separates words for fuzzy matching.
_WORDS = re.compile(r"[\s\-,.]+")
#: PN component groups, in their order in Part 10 text and DICOM JSON.
GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def fold(text: str) -> str:
    """Case-fold ``text`` (``str.casefold``: ß -> ss, Σ/ς -> σ)."""
    return text.casefold()


#: Latin letters with a stroke or ligatures that have no decomposition,
#: and the letters fuzzy matching reads them as (after case folding).
_BASE_LETTERS = str.maketrans(
    {"đ": "d", "ð": "d", "ø": "o", "ł": "l", "ŀ": "l", "ħ": "h", "ŧ": "t",
     "ı": "i", "æ": "ae", "œ": "oe", "þ": "th"}
)  # fmt: skip


def fuzzy_fold(text: str) -> str:
    """``text`` case-folded, compatibility-decomposed, without combining marks.

    ``Gómez`` -> ``gomez``, ``ＹＡＭＡＤＡ`` (full width) -> ``yamada``,
    ``Straße`` -> ``strasse``, ``Đặng`` -> ``dang``, ``Øster`` -> ``oster``.
    Decomposed again after folding, since folding can produce composed
    characters.
    """
    if text.isascii():  # nothing to decompose or strip (most names)
        return text.lower()
    text = unicodedata.normalize("NFKD", text).casefold()
    text = unicodedata.normalize("NFKD", text.translate(_BASE_LETTERS))
    return "".join(c for c in text if not unicodedata.combining(c))


def pn_values(text: str) -> list[list[str]]:
    """A PN in Part 10 text form as values of component groups.

    ``"Yamada^Tarou=山田^太郎"`` -> ``[["Yamada^Tarou", "山田^太郎"]]``;
    several values are separated by a backslash.
    """
    return [value.split("=") for value in text.split("\\")]


def pn_json(text: str | None) -> list[dict[str, str]] | None:
    """A PN in Part 10 text form as the ``Value`` of a DICOM JSON element.

    Empty groups are left out, as PS3.18 F.2.2 does; ``None`` (or no text)
    gives ``None``.
    """
    if not text:
        return None
    out = []
    for groups in pn_values(text):
        out.append({GROUPS[i]: g for i, g in enumerate(groups[:3]) if g})
    return out


def pn_text(values: object) -> str | None:
    """The ``Value`` of a DICOM JSON PN element as Part 10 text.

    ``[{"Alphabetic": "A", "Phonetic": "P"}]`` -> ``"A==P"``; a plain string
    value (non-conformant, but seen) is taken as it is.
    """
    if not isinstance(values, list):
        return None
    names = []
    for value in values:
        if isinstance(value, dict):
            groups = [str(value.get(k) or "") for k in GROUPS]
            names.append("=".join(groups).rstrip("="))
        elif value is not None:
            names.append(str(value))
    return "\\".join(names) or None


def fuzzy_tokens(text: str) -> Iterator[str]:
    """What a fuzzy PN filter is matched against, by prefix.

    Per component group of every value: the whole group, each name
    component (family, given, middle... split at ``^``) and each word of a
    component (split at spaces, hyphens, commas and periods), all
    :func:`fuzzy_fold`-ed.  May repeat a token.
    """
    for groups in pn_values(text):
        for group in groups:
            folded = fuzzy_fold(group).strip()
            if not folded:
                continue
            yield folded
            for component in folded.split("^"):
                component = component.strip()
                if component:
                    yield component
                    words = [w for w in _WORDS.split(component) if w]
                    if len(words) > 1:
                        yield from words


# Memoised: the write path derives the key of every instance's names, and
# the instances of a study repeat them (this was half of search_values).
@functools.lru_cache(maxsize=4096)
def fuzzy_key(text: str | None) -> str | None:
    """The fuzzy search key of a PN: its distinct tokens, each after :data:`SEP`."""
    if not text:
        return None
    tokens = list(dict.fromkeys(fuzzy_tokens(text)))
    return "".join(SEP + token for token in tokens) or None


def wildcard_regex(pattern: str, *, prefix: bool = False) -> re.Pattern[str]:
    """A compiled regex for a DICOM wildcard pattern (``*`` any run, ``?`` one).

    Every other character is literal.  Use ``fullmatch``; with ``prefix`` the
    pattern may be followed by anything (fuzzy matching by prefix).
    """
    body = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern
    )
    return re.compile(body + (".*" if prefix else ""), re.DOTALL)


def has_wildcards(text: str) -> bool:
    """Whether a filter holds a DICOM wildcard."""
    return "*" in text or "?" in text


class NameMatcher:
    """One PN filter value, matched against PN text (Part 10 form).

    Not fuzzy: the filter, case-folded, must equal (or, with wildcards,
    match) one whole component group of one value.  A filter with ``=``
    names groups in order (``Yamada^Tarou=山田^太郎``): each non-empty one
    must match that group of the same value.

    Fuzzy: the filter and the name are :func:`fuzzy_fold`-ed, and the filter
    must match the start of a whole group, of a name component or of a word
    (:func:`fuzzy_tokens`); with ``=``, the start of each named group.
    """

    def __init__(self, pattern: str, *, fuzzy: bool) -> None:
        self.fuzzy = fuzzy
        norm = fuzzy_fold if fuzzy else fold
        self.grouped = "=" in pattern
        #: Per named group (grouped) or one entry: a regex, or None (any).
        self.groups: list[re.Pattern[str] | None] = [
            wildcard_regex(norm(g), prefix=fuzzy) if g and g != "*" else None
            for g in (pattern.split("=") if self.grouped else [pattern])
        ]

    def __call__(self, text: str | None) -> bool:
        """Whether the name ``text`` matches."""
        if not text:
            return False
        if self.grouped:
            norm = fuzzy_fold if self.fuzzy else fold
            for groups in pn_values(text):
                if all(
                    rx is None
                    or (i < len(groups) and rx.fullmatch(norm(groups[i])) is not None)
                    for i, rx in enumerate(self.groups)
                ):
                    return True
            return False
        rx = self.groups[0]
        if rx is None:
            return True
        if self.fuzzy:
            return any(rx.fullmatch(t) is not None for t in fuzzy_tokens(text))
        return any(
            rx.fullmatch(fold(g)) is not None
            for groups in pn_values(text)
            for g in groups
        )
