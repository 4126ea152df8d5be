"""Suites: a folder with ``suite.toml`` → a validated :class:`Suite` → its :class:`Case` list.

A suite says *what* to run: the problem, the model, the training and measurement
settings, the matrix (plugin × method × grad mode × tolerances × seeds × devices) and
named profiles that override any of those. Every key and value is checked against
:data:`COMMON_SCHEMA` plus its workload's sections; a mistake is a :class:`SuiteError` whose one-line message names the bad
key or value and the valid choices.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odebench.protocol import DEVICES, FIXED_METHODS, GRAD_MODES, METHODS


class SuiteError(ValueError):
    """A suite file or a command-line filter is invalid (message is one line)."""


# A field spec: (type, constraint). Constraint is a tuple of choices, "pos" (> 0),
# "nonneg" (>= 0), "name" (an identifier, see NAME_RULE), or None. Lists are checked
# element-wise; every float must be finite.
_INT, _FLOAT, _STR, _BOOL = int, float, str, bool
ISOLATION = ("process", "inline")
DTYPES = ("float32", "float64")
#: A suite name becomes a folder under the results root: one path component that cannot
#: climb out of it (no '/', not '.' or '..', not empty, not hidden).
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: Sections every suite has, whatever its workload. A workload (see
#: :mod:`odebench.workloads`) adds its own sections and matrix axes.
COMMON_SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "suite": {"name": (_STR, "name"), "description": (_STR, None), "workload": (_STR, None),
              "reference": (_STR, None), "default_profile": (_STR, None)},
    "measure": {"warmup": (_INT, "nonneg"), "repeats": (_INT, "pos"), "timeout_s": (_FLOAT, "pos"),
                "isolation": (_STR, ISOLATION), "max_steps": (_INT, "pos"), "dtype": (_STR, DTYPES),
                "threads": (_INT, "nonneg")},
    "matrix": {"plugin": ([_STR], None), "method": ([_STR], METHODS), "grad_mode": ([_STR], GRAD_MODES),
               "seed": ([_INT], "nonneg"), "device": ([_STR], DEVICES), "tolerances": ([dict], None),
               "include": ([dict], None)},
    "paper": {"source": (_STR, None), "rows": ([dict], None)},
}
_COMMON_REQUIRED = ("suite", "measure", "matrix")
_TOL_KEYS = ("rtol", "atol")

COMMON_DEFAULTS: dict[str, dict[str, Any]] = {
    "suite": {"workload": "train", "description": "", "reference": "", "default_profile": ""},
    # threads = 0 leaves the frameworks' own thread settings alone.
    "measure": {"warmup": 1, "repeats": 1, "timeout_s": 1800.0, "isolation": "process",
                "max_steps": 100_000, "dtype": "float32", "threads": 0},
    "matrix": {"seed": [0], "device": ["cpu"], "tolerances": [{"rtol": 1e-7, "atol": 1e-9}], "include": []},
    "paper": {"source": "", "rows": []},
}


def _choices(options) -> str:
    return ", ".join(str(o) for o in options)


def _check_value(where: str, value: Any, typ: Any, constraint: Any) -> Any:
    if isinstance(typ, list):
        must_fill = where.startswith("matrix.") and where != "matrix.include"
        if not isinstance(value, list) or (not value and must_fill):
            raise SuiteError(f"{where} must be a {'non-empty ' if must_fill else ''}list, got {value!r}")
        return [_check_value(f"{where}[{i}]", v, typ[0], constraint) for i, v in enumerate(value)]
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
        raise SuiteError(f"unknown value {value!r} for {where}; valid: {_choices(constraint)}")
    if constraint == "pos" and not value > 0:
        raise SuiteError(f"{where} must be positive, got {value!r}")
    if constraint == "nonneg" and not value >= 0:
        raise SuiteError(f"{where} must not be negative, got {value!r}")
    return value


def _check_section(name: str, section: Any, schema: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise SuiteError(f"[{name}] must be a table, got {section!r}")
    out = {}
    for key, value in section.items():
        if key not in schema:
            raise SuiteError(f"unknown key {key!r} in [{name}]; valid: {_choices(schema)}")
        out[key] = _check_value(f"{name}.{key}", value, *schema[key])
    return out


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Case:
    """One point of a suite's matrix: what a single record measures."""

    suite: str
    plugin: str
    method: str
    grad_mode: str
    rtol: float | None
    atol: float | None
    seed: int
    device: str
    axes: tuple[tuple[str, Any], ...] = ()  # the workload's own matrix axes, e.g. (("model", "odenet"),)

    @property
    def id(self) -> str:
        tol = "" if self.rtol is None else f"/rtol={self.rtol:g},atol={self.atol:g}"
        extra = "".join(f"/{k}={v}" for k, v in self.axes)
        return f"{self.plugin}/{self.method}/{self.grad_mode}{tol}{extra}/seed={self.seed}/{self.device}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["axes"]
        return out | dict(self.axes) | {"case_id": self.id}


@dataclass
class Suite:
    """A validated suite with one profile applied.

    Attributes:
        name, path, profile: where it came from (``profile`` as resolved: never ``default`` when
            the suite names a ``default_profile``).
        config: the merged, validated settings, section by section.
        profiles: the names ``--profile`` takes: ``default`` first when it means the base
            settings, then the file's profiles.
        default_profile: the profile used without ``--profile``.
    """

    name: str
    path: Path
    profile: str
    config: dict[str, dict[str, Any]]
    profiles: list[str] = field(default_factory=list)
    default_profile: str = "default"

    @property
    def workload(self):
        """The workload module that runs this suite's cases."""
        from odebench.workloads import get_workload

        return get_workload(self.config["suite"]["workload"])

    def section(self, name: str) -> dict[str, Any]:
        return self.config[name]

    def cases(self, *, plugins=None, methods=None, grad_modes=None, seeds=None, devices=None) -> list[Case]:
        """The matrix, narrowed by the filters (each None or a list of values in the matrix).

        The matrix is the product of its axes, plus ``matrix.include``: extra blocks whose
        given axes replace the matrix's (e.g. scipy's ``lsoda`` without adding ``lsoda``
        for every plugin). Tolerances apply to adaptive methods only; a fixed-step method
        yields one case per seed and device whatever the number of tolerance pairs.

        Raises:
            SuiteError: for a filter value that is not in the suite's matrix.
        """
        m = self.config["matrix"]
        names = ["plugin", "method", "grad_mode", "seed", "device", *self.workload.AXES]
        base = {k: m[k] for k in names}
        blocks = [base] + [base | {k: v if isinstance(v, list) else [v] for k, v in inc.items()}
                           for inc in m["include"]]
        chosen = {"plugin": plugins, "method": methods, "grad_mode": grad_modes, "seed": seeds,
                  "device": devices}
        for key, wanted in chosen.items():
            allowed = [v for b in blocks for v in b[key]]
            for v in wanted or []:
                if v not in allowed:
                    flag = {"grad_mode": "grad"}.get(key, key)
                    raise SuiteError(f"--{flag} {v!r} is not in suite {self.name!r}'s matrix "
                                     f"(profile {self.profile!r}); valid: {_choices(dict.fromkeys(allowed))}")
        out: list[Case] = []
        seen: set[str] = set()
        for block in blocks:
            values = [[v for v in block[k] if not chosen.get(k) or v in chosen[k]] for k in names]
            for plugin, method, grad, seed, device, *extra in itertools.product(*values):
                tols = [(None, None)] if method in FIXED_METHODS else \
                    [(t["rtol"], t["atol"]) for t in m["tolerances"]]
                for rtol, atol in tols:
                    case = Case(self.name, plugin, method, grad, rtol, atol, seed, device,
                                tuple(zip(names[5:], extra)))
                    if case.id not in seen:
                        seen.add(case.id)
                        out.append(case)
        return out


def schema_for(workload_name: str) -> tuple[dict, dict, tuple[str, ...]]:
    """The schema, defaults and required sections of a suite of this workload.

    Raises:
        SuiteError: for an unknown workload (lists the valid ones).
    """
    from odebench.workloads import WORKLOADS, get_workload

    if workload_name not in WORKLOADS:
        raise SuiteError(f"unknown value {workload_name!r} for suite.workload; valid: {_choices(WORKLOADS)}")
    w = get_workload(workload_name)
    # A workload may add keys to a common section (e.g. measure.fairness_steps) or add sections.
    schema = {k: dict(v) for k, v in COMMON_SCHEMA.items()}
    for name, keys in w.SECTIONS.items():
        schema[name] = schema.get(name, {}) | keys
    schema["matrix"] = schema["matrix"] | w.AXES
    defaults = {k: dict(v) for k, v in COMMON_DEFAULTS.items()}
    for name, values in w.DEFAULTS.items():
        defaults[name] = defaults.get(name, {}) | values
    return schema, defaults, _COMMON_REQUIRED + tuple(w.REQUIRED)


def _validate(raw: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    suite_section = raw.get("suite", {})
    workload = suite_section.get("workload", "train") if isinstance(suite_section, dict) else "train"
    schema_all, defaults, required = schema_for(workload)
    for key in raw:
        if key not in schema_all:
            raise SuiteError(f"unknown section [{key}] in {where}; valid: {_choices(list(schema_all))}")
        _check_section(key, raw[key], schema_all[key])  # a typo is reported before a missing section
    for key in required:
        if key not in raw:
            raise SuiteError(f"{where} has no [{key}] section")
    config = {}
    for name, schema in schema_all.items():
        section = _merge(defaults.get(name, {}), raw.get(name, {}))
        config[name] = _check_section(name, section, schema)
    for axis in get_workload_axes(workload):
        if axis not in config["matrix"]:
            raise SuiteError(f"{where}: [matrix] has no {axis!r} (the {workload} workload needs it)")
    matrix_schema = schema_all["matrix"]
    for i, inc in enumerate(config["matrix"]["include"]):
        for key, value in inc.items():
            if key in ("tolerances", "include") or key not in matrix_schema:
                axes = [k for k in matrix_schema if k not in ("tolerances", "include")]
                raise SuiteError(f"unknown key {key!r} in matrix.include[{i}]; valid: {_choices(axes)}")
            _check_value(f"matrix.include[{i}].{key}", value if isinstance(value, list) else [value],
                         *matrix_schema[key])
    for i, tol in enumerate(config["matrix"]["tolerances"]):
        for key in tol:
            if key not in _TOL_KEYS:
                raise SuiteError(f"unknown key {key!r} in matrix.tolerances[{i}]; valid: rtol, atol")
        for key in _TOL_KEYS:
            if key not in tol:
                raise SuiteError(f"matrix.tolerances[{i}] has no {key!r}")
            _check_value(f"matrix.tolerances[{i}].{key}", tol[key], _FLOAT, "pos")
    if "name" not in config["suite"]:
        raise SuiteError(f"{where}: [suite] has no 'name'")
    from odebench.workloads import get_workload

    get_workload(workload).validate(config, where)
    return config


def get_workload_axes(workload: str) -> list[str]:
    from odebench.workloads import get_workload

    return list(get_workload(workload).AXES)


def check_problem_and_model(config: dict[str, dict[str, Any]], where: str) -> None:
    """Cross-checks of the ``train`` workload: problem name and params, model, training."""
    from odebench.models import ACTIVATIONS
    from odebench.problems import PROBLEMS

    prob = config["problem"]
    if "name" not in prob:
        raise SuiteError(f"{where}: [problem] has no 'name'; valid: {_choices(PROBLEMS)}")
    if prob["name"] not in PROBLEMS:
        raise SuiteError(f"unknown problem {prob['name']!r}; valid: {_choices(PROBLEMS)}")
    fields = [f.name for f in dataclasses.fields(PROBLEMS[prob["name"]]) if not f.name.startswith("_")]
    for key in prob["params"]:
        if key not in fields:
            raise SuiteError(f"unknown key {key!r} in problem.params for {prob['name']!r}; "
                             f"valid: {_choices(fields)}")
    if config["model"].get("activation") not in ACTIVATIONS:
        raise SuiteError(f"unknown value {config['model'].get('activation')!r} for model.activation; "
                         f"valid: {_choices(ACTIVATIONS)}")
    if "sizes" not in config["model"]:
        raise SuiteError(f"{where}: [model] has no 'sizes'")
    train = config["training"]
    for key in ("lr", "iterations", "batch_size", "batch_time"):
        if key not in train:
            raise SuiteError(f"{where}: [training] has no {key!r}")
    for snap in train["snapshots"]:
        if snap > train["iterations"]:
            raise SuiteError(f"training.snapshots has {snap}, beyond training.iterations = "
                             f"{train['iterations']}")
    check_problem_fit(config)


def check_problem_fit(config: dict[str, dict[str, Any]]) -> None:
    """Cross-checks of the ``train`` workload's values against its problem, made when the suite
    is loaded so that a setting no case can run with fails before the first case starts.

    Arguments:
        config: the settings, with a known problem name and the model and training keys present.

    Raises:
        SuiteError: for a problem parameter of the wrong type or not finite, ``t1 <= t0``, fewer
            than two observation times, an initial state or matrix whose size is not the
            problem's state dimension, model sizes that do not start and end with that
            dimension, a window of fewer than two points, or more windows per batch than the
            observation times hold.
    """
    from odebench.problems import PROBLEMS
    from odebench.workloads.train import make_problem

    name, params = config["problem"]["name"], config["problem"]["params"]
    defaults = PROBLEMS[name]()
    for key, value in params.items():
        _check_param(f"problem.params.{key}", value, getattr(defaults, key))
    problem = make_problem(config)
    if not problem.t1 > problem.t0:
        raise SuiteError(f"problem.params.t1 = {problem.t1!r} must be greater than t0 = {problem.t0!r}")
    n = problem.n_points
    if n < 2:
        raise SuiteError(f"problem.params.n_points must be at least 2, got {n}")
    dim = problem.state_dim
    for key, value in params.items():  # a matrix parameter (the spiral's A) acts on the state
        if isinstance(getattr(defaults, key), tuple) and value and isinstance(value[0], list) and \
                any(len(row) != dim for row in value):
            raise SuiteError(f"problem.params.{key} must be a square {dim}x{dim} matrix, got rows of length "
                             f"{', '.join(str(len(row)) for row in value)}")
    if len(problem.y0) != dim:
        raise SuiteError(f"problem.params.y0 has {len(problem.y0)} values; the state of {name!r} has {dim}")
    sizes = config["model"]["sizes"]
    if len(sizes) < 2:
        raise SuiteError(f"model.sizes {sizes} needs at least an input and an output size (both {dim})")
    if sizes[0] != dim or sizes[-1] != dim:
        raise SuiteError(f"model.sizes {sizes} must start and end with {dim}, the state dimension of {name!r}")
    bt, bs = config["training"]["batch_time"], config["training"]["batch_size"]
    if bt < 2:
        raise SuiteError(f"training.batch_time must be at least 2 (a window is a start and an end point), got {bt}")
    windows = n - bt  # a window starts at one of the first n - batch_time observations
    if windows < 1:
        raise SuiteError(f"training.batch_time = {bt} leaves no window in the problem's {n} observation times; "
                         f"valid: 2 to {n - 1}")
    if bs > windows:
        raise SuiteError(f"training.batch_size = {bs} is more than the {windows} windows of batch_time {bt} in "
                         f"{n} observation times (problem.params.n_points); valid: 1 to {windows}")


def _check_param(where: str, value: Any, default: Any) -> None:
    """Check a problem parameter against the type of its default: an integer, a finite number, a
    list of finite numbers (a state) or a list of such lists (a matrix).

    Raises:
        SuiteError: naming the parameter, the expected kind and the value.
    """
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def numbers(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(number(x) for x in v)

    if isinstance(default, int) and not isinstance(default, bool):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = number(value), "a finite number"
    elif isinstance(default, tuple) and default and isinstance(default[0], tuple):
        ok = isinstance(value, list) and bool(value) and all(numbers(row) for row in value)
        kind = "a matrix (a list of lists) of finite numbers"
    elif isinstance(default, tuple):
        ok, kind = numbers(value), "a non-empty list of finite numbers"
    else:
        return
    if not ok:
        raise SuiteError(f"{where} must be {kind}, got {value!r}")


def suite_file(path: str | Path) -> Path:
    """``suite.toml`` of a suite folder (or the file itself).

    Raises:
        SuiteError: when neither exists.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "suite.toml"
    if not p.is_file():
        raise SuiteError(f"no suite at {str(path)!r}: expected a folder with suite.toml or a .toml file")
    return p


def load_suite(path: str | Path, profile: str | None = None) -> Suite:
    """Read, merge the profile into, and validate a suite.

    ``default`` always means what runs without ``--profile``: the profile that
    ``suite.default_profile`` names, else the base settings, which then go by ``default``.
    A suite that names a default profile and wants its base settings reachable defines an
    empty profile for them (the mnist suite's ``full``).

    Arguments:
        path: a suite folder (``suites/spiral``) or its ``suite.toml``.
        profile: a profile name defined under ``[profiles.NAME]``; None or ``default``: the
            suite's default (see above).

    Raises:
        SuiteError: on a missing file, malformed TOML, any invalid key or value, an unknown
            profile, a ``default_profile`` that is no profile, or a profile named ``default``.
    """
    file = suite_file(path)
    try:
        raw = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"malformed TOML in {file}: {exc}") from None
    profiles = raw.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise SuiteError(f"[profiles] in {file} must be a table of profile tables")
    base = _validate(raw, str(file))  # the base must be valid on its own
    default, names = _profile_names(base, profiles, file)
    chosen = default if profile in (None, "default") else profile
    if chosen != "default":
        if chosen not in profiles:
            valid = [f"{n} (the default)" if n == default != "default" else n for n in names]
            raise SuiteError(f"unknown profile {chosen!r} for suite {base['suite']['name']!r}; "
                             f"valid: {_choices(valid)}")
        raw = _merge(raw, profiles[chosen])
    config = _validate(raw, f"{file} (profile {chosen!r})")
    return Suite(config["suite"]["name"], file.parent, chosen, config, names, default)


def _profile_names(base: dict[str, dict[str, Any]], profiles: dict[str, Any], file: Path) -> tuple[str, list[str]]:
    """The profile used without ``--profile``, and the names ``--profile`` takes.

    Raises:
        SuiteError: for a profile named ``default`` (it would shadow the suite's default) or a
            ``suite.default_profile`` that names no profile.
    """
    if "default" in profiles:
        raise SuiteError(f"[profiles.default] in {file}: 'default' is reserved for the settings used without "
                         "--profile; valid: set suite.default_profile to a profile of another name")
    default = base["suite"]["default_profile"] or "default"
    if default != "default" and default not in profiles:
        raise SuiteError(f"unknown value {default!r} for suite.default_profile; valid: {_choices(profiles)}")
    return default, ([] if default != "default" else ["default"]) + list(profiles)
