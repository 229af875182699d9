"""metastore.jsjson: JSON text as JavaScript's JSON.stringify writes it.

The oracle fixtures were written by Node's ``JSON.stringify`` (each line of
``expected_*.json`` is ``"imageId": <JSON.stringify of its answers>``): every
number token in them, and every whole answer, must come out of the formatter
byte for byte.  A table covers the edges of ``Number::toString``, and where
Node is installed, random doubles are compared with Node's own output.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from metastore.jsjson import dumps, number_text

ORACLE = Path(__file__).resolve().parent / "fixtures" / "oracle"
EXPECTED = sorted(ORACLE.glob("expected_*.json"))
#: A JSON string (skipped) or a number token (group 1).
TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')


def number_tokens(path: Path) -> list[bytes]:
    """Every number token of a JSON file, as written."""
    return [m.group(1) for m in TOKEN.finditer(path.read_bytes()) if m.group(1)]


def test_the_oracle_files_hold_the_edges() -> None:
    """The fixtures cover plain, fractional and exponent numbers."""
    tokens = {t for path in EXPECTED for t in number_tokens(path)}
    tokens |= set(number_tokens(ORACLE / "js_semantics.json"))
    assert {b"1e+21", b"1.5e-7", b"1.2345678901234568e+29"} <= tokens
    assert any(b"." in t for t in tokens) and any(b"." not in t for t in tokens)


@pytest.mark.parametrize(
    "path", [*EXPECTED, ORACLE / "js_semantics.json"], ids=lambda p: p.name
)
def test_every_oracle_number_is_written_as_node_wrote_it(path: Path) -> None:
    """number_text(float(token)) is the token Node wrote, for every token."""
    tokens = number_tokens(path)
    assert tokens
    wrong = [
        (t, number_text(float(t)))
        for t in tokens
        if number_text(float(t)) != t.decode()
    ]
    assert not wrong, wrong[:10]
    # and the integers as ints, as Python's json parses them
    ints = [t for t in tokens if t.lstrip(b"-").isdigit()]
    assert all(number_text(int(t)) == t.decode() for t in ints)


@pytest.mark.parametrize("path", EXPECTED, ids=lambda p: p.name)
def test_every_oracle_answer_is_written_as_node_wrote_it(path: Path) -> None:
    """dumps(json.loads(answer)) is Node's JSON.stringify text, byte for byte."""
    count = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, text = line.rstrip(",").partition(": ")
        if not sep:
            continue  # the enclosing braces
        assert dumps(json.loads(text)).decode("utf-8") == text, key
        count += 1
    assert count > 10


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (800.0, "800"),
        (-0.0, "0"),
        (0.0, "0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e21, "1e+21"),
        (-1e21, "-1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (9.999999999999999e20, "999999999999999900000"),
        (1e16, "10000000000000000"),
        (1.5e16, "15000000000000000"),
        (1234567890123456.7, "1234567890123456.8"),
        (1e-6, "0.000001"),
        (1.5e-6, "0.0000015"),
        (-1.234e-6, "-0.000001234"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (-2.5e-8, "-2.5e-8"),
        (5e-324, "5e-324"),
        (2.2250738585072014e-308, "2.2250738585072014e-308"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (1.2345678901234568e29, "1.2345678901234568e+29"),
        (0.5, "0.5"),
        (-158.135803, "-158.135803"),
        (float("nan"), "null"),
        (float("inf"), "null"),
        (float("-inf"), "null"),
        (0, "0"),
        (-7, "-7"),
        (2**53, "9007199254740992"),
        (2**53 + 1, "9007199254740992"),  # not a JavaScript number: the nearest
        (2**64, "18446744073709552000"),
        (-(2**70), "-1.1805916207174113e+21"),
        (10**400, "null"),  # past the doubles: Infinity
    ],
)
def test_number_text_edges(value: float, text: str) -> None:
    """Number::toString's layout and JSON.stringify's null, case by case."""
    assert number_text(value) == text


def test_dumps_writes_values_as_json_stringify() -> None:
    """Numbers anywhere in a value; strings, booleans and null as orjson does."""
    value = {
        "windowCenter": [40.0, -0.0],
        "nested": {"x": float("nan"), "big": 2**64, "list": (1e21, True, None)},
        "text": 'é "q" \\ \n \x01',
        "n": 512,
    }
    assert dumps(value) == (
        b'{"windowCenter":[40,0],"nested":{"x":null,"big":18446744073709552000,'
        b'"list":[1e+21,true,null]},"text":"\xc3\xa9 \\"q\\" \\\\ \\n \\u0001","n":512}'
    )
    assert dumps(800.0) == b"800"
    assert dumps(None) == b"null"


def test_dumps_writes_lone_surrogates_as_escapes() -> None:
    """What orjson refuses comes out as JSON.stringify writes it (ES2019)."""
    assert dumps({"a": "x\ud800é", "b": [1.0, 2**70]}) == (
        b'{"a":"x\\ud800\xc3\xa9","b":[1,1.1805916207174113e+21]}'
    )
    assert json.loads(dumps(["\udc00"])) == ["\udc00"]


def test_dumps_refuses_what_is_not_json() -> None:
    """A set is no JSON value: TypeError naming it."""
    with pytest.raises(TypeError, match="set"):
        dumps({"a": {1, 2}})


def test_subclasses_are_written_as_their_base() -> None:
    """An IntEnum or a dict subclass is written as the plain value."""
    import enum

    class Kind(enum.IntEnum):
        A = 3

    class Mapping(dict[str, float]):
        pass

    assert dumps([Kind.A, Mapping(x=2.0), "s"]) == b'[3,{"x":2},"s"]'


def _random_doubles(count: int) -> list[float]:
    """Doubles from random bit patterns (every exponent), and round numbers."""
    rng = random.Random(13)
    values = []
    while len(values) < count:
        (x,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if x == x and abs(x) != float("inf"):
            values.append(x)
    for exponent in range(-325, 309):
        power = float(f"1e{exponent}")
        values += [power, float(f"1.5e{exponent}"), rng.random() * power]
    return values


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_random_doubles_agree_with_node() -> None:
    """Random doubles (by bits) come out as Node's JSON.stringify writes them."""
    values = _random_doubles(20_000)
    bits = [struct.pack("<d", x).hex() for x in values]
    script = (
        "const bits = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const out = bits.map(h => Buffer.from(h, 'hex').readDoubleLE(0));"
        "process.stdout.write(JSON.stringify(out));"
    )
    result = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(bits),
        capture_output=True,
        text=True,
        check=True,
    )
    node = result.stdout[1:-1].split(",")
    assert len(node) == len(values)
    wrong = [(x, n) for x, n in zip(values, node, strict=True) if number_text(x) != n]
    assert not wrong, wrong[:10]
    assert dumps(values).decode() == result.stdout
