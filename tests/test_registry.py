"""Tests for metastore.registry: Cornerstone's provider-chain semantics."""

from __future__ import annotations

import logging
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from metastore.registry import (
    Registry,
    metadata,
    to_lower_camel_tag,
    to_upper_camel_tag,
)

# -- the reference model ---------------------------------------------------

TYPES = ("a", "b", "c")
# Per provider and type: a distinct answer, a falsy answer, or no answer.
ANSWERS = st.sampled_from([None, None, 0, "", False, {}, [], "own"])


class Holder:
    """An object whose bound ``get`` is the provider (not callable itself)."""

    def __init__(self, table):
        self.table = table

    def get(self, type, image_id, *args):
        """Answer from the table."""
        return self.table[type]


class CallableHolder(Holder):
    """A callable object: registered as itself, not through its ``get``."""

    def __call__(self, type, image_id, *args):
        """Answer from the table, tagged to tell it from its get."""
        value = self.table[type]
        return None if value is None else ("call", value)


def make_function(table):
    """A plain function provider answering from ``table``."""

    def provider(type, image_id, *args):
        return table[type]

    return provider


def tagged(table, ident):
    """Replace the "own" marker with an answer unique to the provider."""
    return {t: (("own", ident) if v == "own" else v) for t, v in table.items()}


class RegistryMachine(RuleBasedStateMachine):
    """Registry against a plain list kept with Cornerstone's insertion rule."""

    # A "handle" is what a test passes to add/remove: (kind, obj). The model
    # identity of a handle is obj for functions and callable objects, and
    # ("get", holder) for holders and their bound methods alike.
    handles = Bundle("handles")

    @initialize()
    def setup(self):
        """Start from an empty registry and an empty model."""
        self.registry = Registry()
        self.model = []  # [(priority, identity, answer_function)]
        self.counter = 0

    def _table(self, data):
        self.counter += 1
        return tagged(data, self.counter)

    @rule(target=handles, data=st.fixed_dictionaries({t: ANSWERS for t in TYPES}))
    def new_function(self, data):
        """Make a plain function provider."""
        return ("function", make_function(self._table(data)))

    @rule(target=handles, data=st.fixed_dictionaries({t: ANSWERS for t in TYPES}))
    def new_holder(self, data):
        """Make an object with a get method."""
        return ("holder", Holder(self._table(data)))

    @rule(target=handles, data=st.fixed_dictionaries({t: ANSWERS for t in TYPES}))
    def new_callable(self, data):
        """Make a callable object (which also has a get method)."""
        return ("callable", CallableHolder(self._table(data)))

    @staticmethod
    def _as_passed(handle, bound):
        kind, obj = handle
        if kind == "holder" and bound:
            return obj.get  # a fresh bound method each time
        return obj

    @staticmethod
    def _identity(handle):
        kind, obj = handle
        return ("get", obj) if kind == "holder" else obj

    @staticmethod
    def _answer(handle, mtype):
        kind, obj = handle
        if kind == "holder":
            return obj.get(mtype, "id")
        return obj(mtype, "id")

    @rule(
        handle=handles,
        priority=st.sampled_from([-1, 0, 0, 1, 2.5]),
        bound=st.booleans(),
    )
    def add(self, handle, priority, bound):
        """Add a provider; equal priority goes first; a duplicate is a no-op."""
        self.registry.add_provider(self._as_passed(handle, bound), priority)
        ident = self._identity(handle)
        if any(i is ident or i == ident for _, i, _ in self.model):
            return
        index = next(
            (n for n, (p, _, _) in enumerate(self.model) if p <= priority),
            len(self.model),
        )
        self.model.insert(index, (priority, ident, handle))

    @rule(handle=handles, bound=st.booleans())
    def remove(self, handle, bound):
        """Remove one provider entry by identity (bound methods by equality)."""
        self.registry.remove_provider(self._as_passed(handle, bound))
        ident = self._identity(handle)
        for n, (_, i, _) in enumerate(self.model):
            if i is ident or i == ident:
                del self.model[n]
                break

    @rule()
    def remove_all(self):
        """Empty the registry."""
        self.registry.remove_all_providers()
        self.model.clear()

    @rule(mtype=st.sampled_from(TYPES))
    def get(self, mtype):
        """get returns the first non-None answer in model order, else None."""
        expected = None
        for _, _, handle in self.model:
            expected = self._answer(handle, mtype)
            if expected is not None:
                break
        got = self.registry.get(mtype, "id")
        assert (type(got), got) == (type(expected), expected)

    @invariant()
    def same_order(self):
        """The registry's priorities and length match the model's."""
        entries = self.registry.providers()
        assert [p for p, _ in entries] == [p for p, _, _ in self.model]
        assert len(self.registry) == len(self.model)


RegistryMachine.TestCase.settings = settings(max_examples=200, deadline=None)
TestRegistryStateful = RegistryMachine.TestCase


# -- unit tests --------------------------------------------------------------


def constant(value):
    """A provider that always answers ``value``."""
    return lambda type, image_id, *args: value


def test_empty_registry_answers_none():
    """With no providers, get returns None."""
    assert Registry().get("generalSeriesModule", "x") is None


def test_descending_priority_and_last_added_wins_ties():
    """Higher priority is asked first; at a tie the provider added last wins."""
    r = Registry()
    low, first, second = constant("low"), constant("first"), constant("second")
    r.add_provider(low, -5)
    r.add_provider(first, 3)
    r.add_provider(second, 3)
    assert r.get("t", "x") == "second"
    assert [p for _, p in r.providers()] == [second, first, low]


def test_duplicate_add_is_noop_even_at_other_priority():
    """Re-adding a provider keeps its original entry and priority."""
    r = Registry()
    p = constant(1)
    r.add_provider(p, 0)
    r.add_provider(p, 100)
    assert r.providers() == [(0, p)]


def test_bound_method_counts_as_same_provider():
    """obj.get passed twice is one provider, and removable by a fresh obj.get."""
    r = Registry()
    h = Holder({"t": "v"})
    r.add_provider(h.get)
    r.add_provider(h.get, 7)
    r.add_provider(h)  # the object itself: treated as its bound get
    assert len(r) == 1
    assert h in r
    assert h.get in r
    r.remove_provider(h)
    assert len(r) == 0


def test_distinct_objects_with_equal_value_are_distinct_providers():
    """Bound methods of two different objects are two providers."""
    r = Registry()
    a, b = Holder({"t": "a"}), Holder({"t": "a"})
    r.add_provider(a.get)
    r.add_provider(b.get)
    assert len(r) == 2


def test_remove_removes_one_entry_and_ignores_absent():
    """remove_provider removes only the matching entry; absent is a no-op."""
    r = Registry()
    p, q = constant("p"), constant("q")
    r.add_provider(p)
    r.add_provider(q)
    r.remove_provider(constant("p"))
    assert len(r) == 2
    r.remove_provider(q)
    assert r.providers() == [(0, p)]


def test_remove_all_providers():
    """remove_all_providers empties the chain."""
    r = Registry()
    r.add_provider(constant(1))
    r.add_provider(constant(2), 4)
    r.remove_all_providers()
    assert r.providers() == []
    assert r.get("t", "x") is None


def test_extra_arguments_pass_through_to_every_provider():
    """Every argument after the imageId reaches each provider unchanged."""
    seen = []

    def record(type, image_id, *args):
        seen.append((type, image_id, args))

    def answer(type, image_id, *args):
        return args

    r = Registry()
    r.add_provider(answer, 0)
    r.add_provider(record, 1)
    options = {"noCache": True}
    assert r.get("t", "x", "second", options) == ("second", options)
    assert seen == [("t", "x", ("second", options))]


def test_exceptions_propagate():
    """A provider's exception reaches the caller and stops the chain."""

    def boom(type, image_id, *args):
        raise RuntimeError("provider failed")

    r = Registry()
    r.add_provider(constant("below"), 0)
    r.add_provider(boom, 1)
    with pytest.raises(RuntimeError, match="provider failed"):
        r.get("t", "x")


@pytest.mark.parametrize("falsy", [0, 0.0, "", False, {}, [], ()])
def test_falsy_values_are_answers(falsy):
    """Only None means no answer: falsy values stop the chain."""
    r = Registry()
    r.add_provider(constant("below"), 0)
    r.add_provider(constant(falsy), 1)
    got = r.get("t", "x")
    assert type(got) is type(falsy)
    assert got == falsy


def test_none_falls_through():
    """A provider returning None lets the next one answer."""
    r = Registry()
    r.add_provider(constant("below"), 0)
    r.add_provider(constant(None), 1)
    assert r.get("t", "x") == "below"


@pytest.mark.parametrize("bad", [42, "provider", {"get": 1}, {}])
def test_non_providers_are_rejected(bad):
    """Things that are not callable and have no usable get raise TypeError."""
    with pytest.raises(TypeError, match="provider"):
        Registry().add_provider(bad)


@pytest.mark.parametrize(
    ("priority", "error"), [(float("nan"), ValueError), ("1", TypeError)]
)
def test_bad_priorities_are_rejected(priority, error):
    """A priority must be an orderable number."""
    with pytest.raises(error):
        Registry().add_provider(constant(1), priority)


def test_get_after_continues_below_the_entry():
    """get_after asks only the entries after the given provider."""
    r = Registry()
    top, mid, low = constant("top"), constant(None), constant("low")
    tie_old = constant("tie-old")
    r.add_provider(low, -1)
    r.add_provider(tie_old, 5)
    r.add_provider(mid, 5)  # goes before tie_old
    r.add_provider(top, 10)
    assert r.get_after(top, "t", "x") == "tie-old"
    assert r.get_after(tie_old, "t", "x") == "low"
    assert r.get_after(low, "t", "x") is None
    h = Holder({"t": None})
    r.add_provider(h, 7)
    assert r.get_after(h.get, "t", "x") == "tie-old"
    assert r.chain_after(constant(1)) is None


def test_get_after_unregistered_provider_raises():
    """get_after refuses a provider that is not in the chain."""
    with pytest.raises(ValueError, match="not registered"):
        Registry().get_after(constant(1), "t", "x")


def test_default_registry_is_a_registry():
    """metastore.registry.metadata is a module-level Registry."""
    assert isinstance(metadata, Registry)


# -- getNormalized -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "upper"),
    [
        ("sopInstanceUID", "SOPInstanceUID"),
        ("sopClassUID", "SOPClassUID"),
        ("sopThingId", "SOPThingId"),  # Cornerstone: the sop rule returns early
        ("voiLUTFunction", "VOILUTFunction"),
        ("patientId", "PatientID"),
        ("patientID", "PatientID"),
        ("studyInstanceUID", "StudyInstanceUID"),
        ("rows", "Rows"),
        ("", ""),
    ],
)
def test_to_upper_camel_tag(tag, upper):
    """to_upper_camel_tag follows Cornerstone 5.x rule for rule (memoised too)."""
    assert to_upper_camel_tag(tag) == upper
    assert to_upper_camel_tag(tag) == upper


@pytest.mark.parametrize(
    ("tag", "lower"),
    [
        ("PatientID", "patientId"),
        ("StudyInstanceUID", "studyInstanceUID"),
        ("SOPInstanceUID", "sopInstanceUID"),
        ("VOILUTFunction", "voiLUTFunction"),
        ("ClinicalTrialSiteID", "clinicalTrialSiteId"),
    ],
)
def test_to_lower_camel_tag(tag, lower):
    """to_lower_camel_tag matches the observed 5.x outputs."""
    assert to_lower_camel_tag(tag) == lower


def test_camel_tag_helpers_have_one_owner():
    """getNormalized and the instance module rename keys with the same function."""
    import metastore.modules
    import metastore.modules.instance

    assert to_upper_camel_tag is metastore.modules.to_upper_camel_tag
    assert to_lower_camel_tag is metastore.modules.to_lower_camel_tag
    assert metastore.modules.instance.to_upper_camel_tag is to_upper_camel_tag


def test_get_normalized_merges_with_later_types_winning(caplog):
    """Dict answers merge with UpperCamel keys; later types overwrite; errors log."""
    answers = {
        "generalSeriesModule": {"modality": "CT", "seriesNumber": 1},
        "sopCommonModule": {"sopInstanceUID": "1.2", "modality": "MR"},
        "empty": {},
        "list": [{"a": 1}],
        "zero": 0,
    }

    def provider(type, image_id, *args):
        if type == "broken":
            raise RuntimeError("bad module")
        return answers.get(type)

    r = Registry()
    r.add_provider(provider)
    with caplog.at_level(logging.ERROR, logger="metastore.registry"):
        result = r.get_normalized(
            "x",
            [
                "generalSeriesModule",
                "broken",
                "missing",
                "empty",
                "list",
                "zero",
                "sopCommonModule",
            ],
        )
    assert result == {"Modality": "MR", "SeriesNumber": 1, "SOPInstanceUID": "1.2"}
    assert "broken" in caplog.text


def test_get_normalized_with_getter_and_nothing_found():
    """A custom getter replaces get; nothing found gives {}."""
    r = Registry()
    assert r.get_normalized("x", ["a"]) == {}
    calls = []

    def getter(type, image_id):
        calls.append((type, image_id))
        return {"patientId": "P"}

    assert r.get_normalized("x", ["patientModule"], getter) == {"PatientID": "P"}
    assert calls == [("patientModule", "x")]


# -- thread safety ------------------------------------------------------------


def test_concurrent_add_remove_keeps_a_consistent_chain():
    """Many threads adding, removing and reading leave a consistent chain."""
    r = Registry()
    n_threads, per_thread = 8, 200
    keep = [[constant((t, i)) for i in range(per_thread)] for t in range(n_threads)]
    drop = [[constant(None) for _ in range(per_thread)] for _ in range(n_threads)]
    errors = []
    start = threading.Barrier(n_threads)

    def work(t):
        try:
            start.wait()
            for i in range(per_thread):
                r.add_provider(keep[t][i], i % 5)
                r.add_provider(drop[t][i], i % 3)
                r.add_provider(keep[t][i], 99)  # duplicate: no-op
                r.get("t", "x")
                r.remove_provider(drop[t][i])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    entries = r.providers()
    assert len(entries) == n_threads * per_thread
    assert {id(p) for _, p in entries} == {id(p) for row in keep for p in row}
    priorities = [p for p, _ in entries]
    assert priorities == sorted(priorities, reverse=True)
    priority_of = {id(p): prio for prio, p in entries}
    for row in keep:
        assert [priority_of[id(p)] for p in row] == [i % 5 for i in range(per_thread)]
