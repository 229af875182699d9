"""Load the Cornerstone oracle fixtures and compare values as compare.py does.

The oracle (``/work/shared/oracle/run_oracle.mjs``) writes JSON with tagged
JavaScript values; :func:`decode` turns them into Python values (undefined and
null -> ``None``, NaN/Infinity -> floats, errors -> :class:`OracleError`).
:func:`differences` is the equivalent of the oracle's ``compare.py``: numbers
by value (booleans are not numbers), exact key sets, NaN equal to NaN.  Only
the standard library; no Node and no /work/shared at test time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "oracle"


@dataclass(frozen=True)
class OracleError:
    """A module call that threw in Cornerstone (``{"$error": {...}}``)."""

    name: str
    message: str


def decode(value: Any) -> Any:
    """Turn the oracle's tagged encoding into Python values."""
    if isinstance(value, dict):
        if "$error" in value and len(value) == 1:
            err = value["$error"]
            return OracleError(err.get("name", ""), err.get("message", ""))
        if "$js" in value:
            tag = value["$js"]
            if tag == "undefined":
                return None
            if tag == "NaN":
                return math.nan
            if tag == "Infinity":
                return math.inf
            if tag == "-Infinity":
                return -math.inf
            if "values" in value:  # typed arrays
                return list(value["values"])
            raise ValueError(f"unknown oracle tag {value!r}")
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected`` (both decoded), as paths."""
    out: list[str] = []
    _diff(expected, actual, path, out)
    return out


def _diff(exp: Any, act: Any, path: str, out: list[str]) -> None:
    if _is_num(exp) and _is_num(act):
        both_nan = isinstance(exp, float) and isinstance(act, float)
        if both_nan and math.isnan(exp) and math.isnan(act):
            return
        if exp != act:
            out.append(f"{path}: {exp!r} != {act!r}")
        return
    if exp is None or act is None:
        if exp is not act:
            out.append(f"{path}: expected {exp!r}, got {_short(act)}")
        return
    if type(exp) is not type(act) and not (
        isinstance(exp, str) and isinstance(act, str)
    ):
        out.append(f"{path}: expected {_short(exp)}, got {_short(act)}")
        return
    if isinstance(exp, dict):
        for key in exp:
            if key not in act:
                out.append(f"{path}.{key}: missing")
            else:
                _diff(exp[key], act[key], f"{path}.{key}", out)
        out.extend(f"{path}.{key}: unexpected key" for key in act if key not in exp)
        return
    if isinstance(exp, list):
        if len(exp) != len(act):
            out.append(f"{path}: length {len(exp)} != {len(act)}")
        for i, (e, a) in enumerate(zip(exp, act, strict=False)):
            _diff(e, a, f"{path}[{i}]", out)
        return
    if exp != act:
        out.append(f"{path}: {_short(exp)} != {_short(act)}")


def _short(value: Any) -> str:
    return repr(value)[:200]


@cache
def load_cases(name: str) -> list[dict[str, Any]]:
    """The case list ``cases_<name>.json`` (imageId, metadata, source...)."""
    with (FIXTURES / f"cases_{name}.json").open(encoding="utf-8") as f:
        cases: list[dict[str, Any]] = json.load(f)
    return cases


@cache
def load_expected(file_name: str) -> dict[str, dict[str, Any]]:
    """An expected-output file, decoded: ``{imageId: {moduleType: value}}``."""
    with (FIXTURES / file_name).open(encoding="utf-8") as f:
        raw = json.load(f)
    return {
        image_id: {t: decode(v) for t, v in mods.items()}
        for image_id, mods in raw.items()
    }
