"""Query filters are data, never SQL: metacharacters match only themselves.

Patient IDs and names full of SQL and LIKE metacharacters (quotes, ``;``,
``--``, ``%``, ``_``, backslashes, ``' OR 1=1 --``, non-ASCII) are stored and
then searched for; every search must return exactly the rows a pure-Python
matcher of the documented semantics picks (case-insensitive, ``*`` any
run, ``?`` one character, everything else literal; person names per
component group), through ``Store.query``, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metastore import Store
from metastore.records import ImageRecord, InstanceRecord, Source

INJECTIONS = [
    "' OR 1=1 --",
    "'; DROP TABLE studies; --",
    '" OR ""="',
    "%",
    "_",
    "\\",
    "\\%",
    "a%b_c",
    "100%",
    "x'y",
    "*",
    "?",
    "%' OR '1'='1",
    "名前'--",
    "É\\_é",
]
ROOT = "/fuzz"


def record(n: int, patient_id: str, patient_name: str) -> InstanceRecord:
    """A one-image instance of its own study with these patient attributes."""
    study, series, sop = f"1.2.{n}", f"1.2.{n}.1", f"1.2.{n}.1.1"
    image_id = (
        f"wadors:http://h/studies/{study}/series/{series}/instances/{sop}/frames/1"
    )
    modules = {"patientModule": {"patientID": patient_id, "patientName": None}}
    return InstanceRecord(
        source=Source(f"{ROOT}/{n}.dcm", 1, 1),
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=None,
        patient_id=patient_id,
        patient_name=patient_name,
        study_date=None,
        study_time=None,
        accession_number=patient_id,
        study_description=patient_name,
        modality=None,
        series_number=None,
        series_description=None,
        instance_number=None,
        number_of_frames=1,
        dicom_json={"00080018": {"vr": "UI", "Value": [sop]}},
        images=[ImageRecord(image_id, 1, modules)],
    )


def matches(pattern: str, value: str) -> bool:
    """The documented semantics: ignore case; ``*`` any run, ``?`` one character."""
    folded, target = pattern.casefold(), value.casefold()
    if "*" not in folded and "?" not in folded:
        return folded == target
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in folded
    )
    return re.fullmatch(regex, target, re.DOTALL) is not None


def test_reference_matcher() -> None:
    """The reference matcher itself: literals, wildcards, case."""
    assert matches("a%b", "A%B") and not matches("a%b", "axb")
    assert matches("a*", "a%_\\") and matches("?", "%") and not matches("?", "ab")
    assert matches("' or 1=1 --", "' OR 1=1 --") and not matches("'", "' OR 1=1 --")
    assert name_matches("b", "a=b") and not name_matches("a=b", "b=a")
    assert name_matches("=b*", "a=bc=d") and not name_matches("a*c", "ab=c")
    assert name_matches("c", "a=b\\c") and name_matches("=", "x")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on a fresh database (SQLite and PostgreSQL)."""
    with Store(db_url) as s:
        yield s


def fill(store: Store, values: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Replace the store's rows by one study per ``(patient_id, patient_name)``."""
    store.prune([ROOT], set())
    store.write_batch([record(n, pid, name) for n, (pid, name) in enumerate(values)])
    return {f"1.2.{n}": value for n, value in enumerate(values)}


def name_matches(pattern: str, name: str) -> bool:
    """Store.query's person-name rule: the pattern matches one whole component
    group (``=`` separates groups, ``\\`` values); with ``=`` in the pattern,
    each non-empty part matches the group in its place (a group the name
    lacks is empty text: ``*`` matches it)."""
    values = [value.split("=") for value in name.split("\\")]
    if "=" not in pattern:
        return any(matches(pattern, g) for groups in values for g in groups)
    parts = pattern.split("=")
    return any(
        all(
            not part or matches(part, groups[i] if i < len(groups) else "")
            for i, part in enumerate(parts)
        )
        for groups in values
    )


def check(store: Store, rows: dict[str, tuple[str, str]], pattern: str) -> None:
    """Every text filter with ``pattern`` returns exactly the matching studies."""
    for keyword, index in (
        ("PatientID", 0),
        ("PatientName", 1),
        ("AccessionNumber", 0),
        ("StudyDescription", 1),
    ):
        rule = name_matches if keyword == "PatientName" else matches
        found = store.query("studies", {keyword: pattern})
        got = {row["0020000D"]["Value"][0] for row in found}
        want = {uid for uid, value in rows.items() if rule(pattern, value[index])}
        assert got == want, (keyword, pattern)


def test_injection_strings_are_data(store: Store) -> None:
    """Classic injection strings match only themselves and leave the tables alone."""
    rows = fill(store, [(s, s) for s in INJECTIONS] + [("plain", "Doe^John")])
    before = store.stats()
    for pattern in [*INJECTIONS, "plain", "*'*", "*%*", "*\\*", "?", "*_"]:
        check(store, rows, pattern)
    after = store.stats()
    assert {k: v for k, v in after.items() if k != "database_bytes"} == {
        k: v for k, v in before.items() if k != "database_bytes"
    }
    assert after["studies"] == len(rows)


#: Includes characters whose casefold() differs from lower() (ß, ς, ﬁ).
ALPHABET = [
    *list("'\";-%_\\*?aAbBsS =()/"),
    "é",
    "É",
    "日",
    "Ω",
    "ω",
    "\u3000",
    "ß",
    "Σ",
    "ς",
    "\ufb01",
]
texts = st.text(st.sampled_from(ALPHABET), min_size=1, max_size=8)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.lists(st.tuples(texts, texts), min_size=1, max_size=6),
    extra=st.lists(texts, max_size=4),
)
def test_random_filters_return_exactly_the_matching_rows(
    store: Store, values: list[tuple[str, str]], extra: list[str]
) -> None:
    """Stored strings queried back (and random filters) match as the reference says."""
    rows = fill(store, values)
    for pattern in [v for pair in values for v in pair] + extra:
        check(store, rows, pattern)


@pytest.mark.postgres
def test_case_folding_is_the_same_for_every_filter_on_postgres(
    postgres_url: str,
) -> None:
    """PatientID 'straße' is found by 'STRASSE', as a patient name is."""
    with Store(postgres_url) as store:
        rows = fill(store, [("straße", "straße"), ("ΟΔΟΣ", "ΟΔΟΣ")])
        for pattern in ("STRASSE", "strasse", "οδος", "*SS*"):
            check(store, rows, pattern)
