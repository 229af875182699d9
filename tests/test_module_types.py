"""The typed module vocabulary (metastore.moduletypes) says what the answers are.

Three kinds of check:

* the tables agree: ``ModuleTypeName``, ``ModuleType``, ``MODULE_TYPES``,
  ``FrameModules`` and the overloads of ``ModuleLookup`` list the same names,
  each mapped to the same answer type;
* the answers have the declared shapes: every answer of every fixture case,
  from the builders, ``DicomJsonProvider`` and ``DatabaseProvider`` (SQLite
  and PostgreSQL), has exactly the keys of its ``TypedDict`` and values of the
  declared types (a test-only checker: metastore itself checks nothing);
* mypy accepts tests/typing/check_module_types.py, whose ``assert_type``
  lines pin the types callers see and whose ``# type: ignore`` lines must
  stay needed (a misspelled module type is a type error).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints, is_typeddict

import pytest
from oracle_fixtures import differences, load_cases

from metastore import moduletypes
from metastore.errors import DicomError
from metastore.index import index_paths
from metastore.modules import MODULE_TYPES, build_module, frame_modules
from metastore.moduletypes import (
    FrameModules,
    ModuleLookup,
    ModuleType,
    ModuleTypeName,
)
from metastore.providers.database import DatabaseProvider
from metastore.providers.dicomjson import DicomJsonProvider
from metastore.store import Store

ROOT = Path(__file__).resolve().parent.parent
CHECK_FILE = ROOT / "tests" / "typing" / "check_module_types.py"

#: Answer type of each module type name, from FrameModules (``X | None``).
ANSWER_TYPES: dict[str, Any] = get_type_hints(FrameModules)


# -- the tables agree -------------------------------------------------------


def test_literal_names_are_the_module_types_in_order() -> None:
    """ModuleTypeName, ModuleType and MODULE_TYPES: the same names, same order."""
    assert get_args(ModuleTypeName) == MODULE_TYPES
    assert tuple(t.value for t in ModuleType) == MODULE_TYPES


def test_frame_modules_has_one_key_per_type() -> None:
    """FrameModules lists every module type, in order, each required."""
    assert tuple(ANSWER_TYPES) == MODULE_TYPES
    assert FrameModules.__required_keys__ == frozenset(MODULE_TYPES)


def test_lookup_overloads_map_each_name_to_its_answer() -> None:
    """One ModuleLookup overload per name (string and enum member), then a
    catch-all; each returns the FrameModules type of its name."""
    # A protocol method without implementation is typing's overload dummy:
    # ask the registry by the method's name.
    where = types.SimpleNamespace(
        __module__=ModuleLookup.__module__,
        __qualname__=f"{ModuleLookup.__qualname__}.__call__",
    )
    overloads = typing.get_overloads(where)  # type: ignore[arg-type]
    assert len(overloads) == len(MODULE_TYPES) + 1
    for name, function in zip(MODULE_TYPES, overloads, strict=False):
        hints = get_type_hints(function)
        assert get_args(hints["type"]) == (name, ModuleType(name)), name
        assert hints["return"] == ANSWER_TYPES[name], name
    last = get_type_hints(overloads[-1])
    assert last["type"] == ModuleTypeName | ModuleType
    assert last["return"] == moduletypes.ModuleAnswer | None


def test_every_answer_type_is_in_module_answer() -> None:
    """ModuleAnswer is the union of every module's answer type."""
    answers = set(get_args(moduletypes.ModuleAnswer))
    for name, hint in ANSWER_TYPES.items():
        declared = [a for a in get_args(hint) if a is not type(None)]
        assert len(declared) == 1 and declared[0] in answers, name


def test_typed_lookups_are_the_plain_functions_at_run_time() -> None:
    """get and get_any are one function (no wrapper, no cost): any string is
    asked, and p.get and p.get_any are one provider to a registry."""
    from metastore import InMemoryProvider, OverrideProvider, Registry

    for cls in (
        Registry,
        DatabaseProvider,
        DicomJsonProvider,
        InMemoryProvider,
        OverrideProvider,
    ):
        assert cls.get is cls.get_any, cls
        assert cls.get.__name__ == "get", cls
    memory = InMemoryProvider()
    memory.add("wadors:x", "calibratedPixelSpacing", {"rowPixelSpacing": 0.2})
    registry = Registry()
    registry.add_provider(memory.get)
    registry.add_provider(memory.get_any)
    assert len(registry) == 1
    assert registry.get_any("calibratedPixelSpacing", "wadors:x") == {
        "rowPixelSpacing": 0.2
    }
    assert registry.get("imagePlaneModul", "wadors:x") is None  # type: ignore[call-overload]


# -- the answers have the declared shapes -----------------------------------


#: The declared types of the fields read raw (Cornerstone's getValue).
RAW_TYPES: tuple[Any, ...] = (str, moduletypes.PersonName, dict[str, Any])


def problems(
    value: Any, hint: Any, path: str = "", *, raw_ok: bool = False
) -> list[str]:
    """Where ``value`` is not of type ``hint`` (a small runtime checker).

    Knows what moduletypes uses: unions, ``None``, ``Literal``, ``list[X]``,
    ``dict[str, X]``, TypedDicts (exact key sets), ``float`` (int accepted,
    bool not), ``int``, ``str``, ``bool``, ``object`` and ``Any``.  With
    ``raw_ok``, a field read raw (its type names one of :data:`RAW_TYPES`)
    may hold anything, as it does for a malformed source; the key sets and
    every other field are still checked.
    """
    if hint is Any or hint is object:
        return []
    origin = get_origin(hint)
    is_union = origin is typing.Union or origin is types.UnionType
    options = get_args(hint) if is_union else (hint,)
    if raw_ok and any(option in RAW_TYPES for option in options):
        return []
    if is_union:
        found = [problems(value, h, path, raw_ok=raw_ok) for h in options]
        if any(not f for f in found):
            return []
        if value is not None and len(options) == 2 and type(None) in options:
            return found[options.index(type(None)) - 1]  # X | None: X's problems
        return [f"{path}: {value!r:.80} is not {hint}"]
    if is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__} is not {hint.__name__}"]
        missing = hint.__required_keys__ - value.keys()
        extra = value.keys() - hint.__required_keys__ - hint.__optional_keys__
        out = [f"{path}.{key}: missing" for key in sorted(missing)]
        out += [f"{path}.{key}: not a field of {hint.__name__}" for key in extra]
        fields = get_type_hints(hint)
        for key in sorted(value.keys() & fields.keys()):
            out += problems(value[key], fields[key], f"{path}.{key}", raw_ok=raw_ok)
        return out
    if origin in (list, dict):
        if not isinstance(value, origin):
            return [f"{path}: {type(value).__name__} is not a {origin.__name__}"]
        items = enumerate(value) if origin is list else value.items()
        item_hint = get_args(hint)[-1]
        return [
            p
            for k, v in items
            for p in problems(v, item_hint, f"{path}[{k!r}]", raw_ok=raw_ok)
        ]
    if hint is None or hint is type(None):
        ok = value is None
    elif origin is Literal:
        ok = any(type(value) is type(a) and value == a for a in get_args(hint))
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint in (int, str, bool):
        ok = type(value) is hint
    else:
        raise AssertionError(f"the checker does not know {hint!r}")
    return [] if ok else [f"{path}: {value!r:.80} is not {hint}"]


def test_the_checker_finds_what_is_wrong() -> None:
    """The checker itself: right values pass, wrong keys and types are named."""
    good = {"patientID": "P1", "patientName": {"Alphabetic": "Doe^J"}}
    assert problems(good, moduletypes.PatientModule) == []
    assert problems({"patientID": None}, moduletypes.PatientModule) == [
        ".patientName: missing"
    ]
    wrong = {"patientID": 7, "patientName": None, "patientId": "x"}
    assert problems(wrong, moduletypes.PatientModule) == [
        ".patientId: not a field of PatientModule",
        ".patientID: 7 is not <class 'str'>",
    ]
    assert problems(wrong, moduletypes.PatientModule, raw_ok=True) == [
        ".patientId: not a field of PatientModule"
    ]
    # raw_ok lets raw fields be anything, not the parseFloat ones
    assert problems("512", float | None, raw_ok=True)
    assert problems(True, float) and problems(False, Literal[False]) == []


#: The case set of real files (pydicom's test data), whose values conform to
#: PS3.18: every answer must have the declared types.  The other sets hold
#: hand-made quirks and fuzz (a PN as a string, Modality as ["NM"], a TM as
#: a number): raw fields keep whatever the source holds, so there the raw
#: fields may hold anything; the key sets and every other field are checked.
TYPED_SET = "pydicom_testdata"
QUIRK_SETS = ("synthetic", "extra", "fuzz")


def provider_answers(set_name: str) -> dict[str, dict[str, Any]]:
    """Every answer of a case set through DicomJsonProvider (errors left out)."""
    provider = DicomJsonProvider()
    cases = load_cases(set_name)
    for case in cases:
        provider.add(case["imageId"], case["metadata"])
    out: dict[str, dict[str, Any]] = {}
    for case in cases:
        row = out.setdefault(case["imageId"], {})
        for module_type in MODULE_TYPES:
            try:
                row[module_type] = provider.get_any(module_type, case["imageId"])
            except DicomError:  # Cornerstone throws there too
                continue
    return out


def shape_problems(
    answers: dict[str, dict[str, Any]], *, raw_ok: bool = False
) -> list[str]:
    """Answers that do not have the declared shape, one line each."""
    return [
        f"{image_id} {p}"
        for image_id, row in answers.items()
        for module_type, value in row.items()
        for p in problems(value, ANSWER_TYPES[module_type], module_type, raw_ok=raw_ok)
    ]


@pytest.mark.oracle
def test_provider_answers_have_the_declared_types() -> None:
    """Every DicomJsonProvider answer matches its TypedDict, keys and values."""
    answers = provider_answers(TYPED_SET)
    assert sum(len(row) for row in answers.values()) > 1000
    assert shape_problems(answers) == []


@pytest.mark.oracle
@pytest.mark.parametrize("set_name", QUIRK_SETS)
def test_quirky_sources_still_give_the_declared_keys(set_name: str) -> None:
    """Hand-made and fuzzed sources: the declared keys, and the declared types
    of every field that is not read raw (parseFloat numbers, lists, flags)."""
    answers = provider_answers(set_name)
    assert sum(len(row) for row in answers.values()) > 100
    assert shape_problems(answers, raw_ok=True) == []


@pytest.mark.oracle
@pytest.mark.parametrize("set_name", [TYPED_SET, *QUIRK_SETS])
def test_builders_give_frame_modules(set_name: str) -> None:
    """frame_modules gives a FrameModules; build_module agrees with it."""
    checked = 0
    for case in load_cases(set_name)[:40]:
        instance, image_id = case["metadata"], case["imageId"]
        try:
            modules = frame_modules(instance, image_id, None)
        except DicomError:  # Cornerstone throws for this instance
            continue
        if modules is None:
            continue
        typed = set_name == TYPED_SET
        assert problems(modules, FrameModules, image_id, raw_ok=not typed) == []
        for module_type in MODULE_TYPES:
            value = build_module(module_type, instance, image_id, None)
            assert differences(modules[module_type], value) == [], module_type
        checked += 1
    assert checked > 5


def test_stored_answers_have_the_declared_types(db_url: str, tmp_path: Path) -> None:
    """DatabaseProvider answers (decoded from the store) match their TypedDicts."""
    folder = tmp_path / "json"
    folder.mkdir()
    seen: set[str] = set()
    for case in load_cases("pydicom_testdata"):
        url = case["imageId"].rsplit("/frames/", 1)[0]
        if url not in seen:
            seen.add(url)
            text = json.dumps(case["metadata"])
            (folder / f"{len(seen):03d}.json").write_text(text, encoding="utf-8")
    with Store(db_url) as store:
        index_paths(store, [folder], wadors_root="http://h/dicomweb", workers=0)
        image_ids = [image_id for image_id, _ in store.export()]
        assert len(image_ids) > 40
        with DatabaseProvider(store) as provider:
            answers = {
                image_id: {t: provider.get_any(t, image_id) for t in MODULE_TYPES}
                for image_id in image_ids
            }
    assert shape_problems(answers) == []


# -- mypy sees the types ----------------------------------------------------


def run_mypy(*files: Path) -> subprocess.CompletedProcess[str]:
    """mypy with the project's configuration (strict, warn_unused_ignores)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "pyproject.toml",
            "--no-error-summary",
            *map(str, files),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_mypy_accepts_the_type_level_checks() -> None:
    """check_module_types.py passes mypy: every assert_type holds and every
    ``# type: ignore`` (the misspelled names) is still needed."""
    result = run_mypy(CHECK_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_rejects_a_misspelled_module_type(tmp_path: Path) -> None:
    """Without the ignore, a misspelled name is a call-overload error."""
    snippet = tmp_path / "misspelled.py"
    snippet.write_text(
        "from metastore import Registry\n"
        "Registry().get('imagePlaneModul', 'wadors:x')\n",
        encoding="utf-8",
    )
    result = run_mypy(snippet)
    assert result.returncode == 1
    assert "misspelled.py:2: error: No overload variant" in result.stdout
    assert "[call-overload]" in result.stdout
