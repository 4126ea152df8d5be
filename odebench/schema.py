"""Schema checking for suite files: one-line errors that name the bad key or value and the choices.

A field spec is ``(type, constraint)``: the type is ``int``, ``float``, ``str``, ``bool``,
``dict`` or a one-element list of one of them (a list checked element-wise); the constraint
is a tuple of valid choices, ``"pos"`` (> 0), ``"nonneg"`` (>= 0), ``"name"`` (an identifier,
:data:`NAME_RULE`) or None; every float must be finite. Suites
(:mod:`odebench.suite`) and workloads (:mod:`odebench.workload`) declare their sections
with these specs and raise :class:`SuiteError` for anything else.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any


class SuiteError(ValueError):
    """A suite file, a profile or a command-line override is invalid (message is one line)."""


_INT, _FLOAT, _STR, _BOOL = int, float, str, bool

#: A suite name becomes a folder under the results root: one path component that cannot
#: climb out of it (no '/', not '.' or '..', not empty, not hidden). The constraint ``"name"``.
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def choices(options) -> str:
    """``options`` as a comma-separated list, for the "valid: ..." part of an error."""
    return ", ".join(str(o) for o in options)


def check_value(where: str, value: Any, typ: Any, constraint: Any) -> Any:
    """``value`` checked against the spec ``(typ, constraint)``; ints are accepted as floats.

    Arguments:
        where: the dotted name shown in the error (``measure.repeats``).
        value: the value read from the file or the command line.
        typ, constraint: the field spec (see the module docstring).

    Returns:
        The value, with an int converted to float for a float field.

    Raises:
        SuiteError: naming ``where``, the value and the valid choices.
    """
    if isinstance(typ, list):
        must_fill = where.startswith("matrix.") and where != "matrix.include"
        if not isinstance(value, list) or (not value and must_fill):
            raise SuiteError(f"{where} must be a {'non-empty ' if must_fill else ''}list, got {value!r}")
        return [check_value(f"{where}[{i}]", v, typ[0], constraint) for i, v in enumerate(value)]
    if typ is _FLOAT and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is _INT and isinstance(value, bool) or not isinstance(value, typ):
        raise SuiteError(f"{where} must be {typ.__name__}, got {value!r}")
    if typ is _FLOAT and not math.isfinite(value):  # JSON has no inf/nan: run.json and records would break
        raise SuiteError(f"{where} must be a finite number, got {value!r}")
    if constraint == "name" and not NAME_RULE.fullmatch(value):
        raise SuiteError(f"{where} {value!r} is not a valid name; valid: letters, digits, '_', '.' and '-', "
                         f"starting with a letter or digit (^{NAME_RULE.pattern}$)")
    if isinstance(constraint, tuple) and value not in constraint:
        raise SuiteError(f"unknown value {value!r} for {where}; valid: {choices(constraint)}")
    if constraint == "pos" and not value > 0:
        raise SuiteError(f"{where} must be positive, got {value!r}")
    if constraint == "nonneg" and not value >= 0:
        raise SuiteError(f"{where} must not be negative, got {value!r}")
    return value


def check_section(name: str, section: Any, schema: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Every key of the table ``[name]`` checked against ``schema`` (key → field spec).

    Raises:
        SuiteError: for a non-table, an unknown key (listing the valid ones) or a bad value.
    """
    if not isinstance(section, dict):
        raise SuiteError(f"[{name}] must be a table, got {section!r}")
    out = {}
    for key, value in section.items():
        if key not in schema:
            raise SuiteError(f"unknown key {key!r} in [{name}]; valid: {choices(schema)}")
        out[key] = check_value(f"{name}.{key}", value, *schema[key])
    return out


def merge(base: dict, override: dict) -> dict:
    """A deep copy of ``base`` with ``override`` merged in, table by table.

    ``params`` tables are replaced whole: a problem's parameters are one value, and a
    profile that names some of them means exactly those.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
