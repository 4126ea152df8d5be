"""Suites: a folder with ``suite.toml`` → a validated :class:`Suite` → its :class:`Case` list.

A suite says *what* to run: the problem, the model, the training and measurement
settings, the matrix (plugin × method × grad mode × tolerances × seeds × devices) and
named profiles that override any of those, and the published claims its runs can test
(``[claims]``, :mod:`odebench.claims`). Every key and value is checked against
:data:`COMMON_SCHEMA` plus its workload's sections (the claims against their rules); a mistake is a :class:`SuiteError` whose one-line message names the bad
key or value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odebench import registry
from odebench.protocol import DEVICES, FIXED_METHODS, GRAD_MODES, METHODS
from odebench.schema import NAME_RULE, SuiteError, check_section, check_value, choices, merge  # noqa: F401
from odebench.workload import Workload

_INT, _FLOAT, _STR = int, float, str
ISOLATION = ("process", "group", "inline")
#: How a case's fresh process begins under process isolation: ``exec`` a new interpreter, or
#: ``fork`` it from a pre-imported launcher (:mod:`odebench.launcher`; Linux, else exec).
LAUNCH = ("exec", "fork")
DTYPES = ("float32", "float64")

#: Sections every suite has, whatever its workload. A workload (see
#: :mod:`odebench.workloads`) adds its own sections and matrix axes.
COMMON_SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "suite": {"name": (_STR, "name"), "description": (_STR, None), "workload": (_STR, None),
              "reference": (_STR, None), "default_profile": (_STR, None)},
    "measure": {"warmup": (_INT, "nonneg"), "repeats": (_INT, "pos"), "timeout_s": (_FLOAT, "pos"),
                "isolation": (_STR, ISOLATION), "launch": (_STR, LAUNCH), "max_steps": (_INT, "pos"), "dtype": (_STR, DTYPES),
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
    "measure": {"warmup": 1, "repeats": 1, "timeout_s": 1800.0, "isolation": "process", "launch": "exec",
                "max_steps": 100_000, "dtype": "float32", "threads": 0},
    "matrix": {"seed": [0], "device": ["cpu"], "tolerances": [{"rtol": 1e-7, "atol": 1e-9}], "include": []},
    "paper": {"source": "", "rows": []},
}


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
    def workload(self) -> Workload:
        """The workload that runs this suite's cases."""
        return registry.get_workload(self.config["suite"]["workload"])

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
        names = ["plugin", "method", "grad_mode", "seed", "device", *self.workload.axes]
        base = {k: m[k] for k in names}
        # An include block may sweep tolerances of its own (a low-order method stopping short of
        # the tightest, as SciMLBenchmarks give each method its own range).
        blocks = [base | {"tolerances": m["tolerances"]}] + [
            base | {"tolerances": m["tolerances"]}
            | {k: v if isinstance(v, list) or k == "tolerances" else [v] for k, v in inc.items()}
            for inc in m["include"]]
        chosen = {"plugin": plugins, "method": methods, "grad_mode": grad_modes, "seed": seeds,
                  "device": devices}
        for key, wanted in chosen.items():
            allowed = [v for b in blocks for v in b[key]]
            for v in wanted or []:
                if v not in allowed:
                    flag = {"grad_mode": "grad"}.get(key, key)
                    raise SuiteError(f"--{flag} {v!r} is not in suite {self.name!r}'s matrix "
                                     f"(profile {self.profile!r}); valid: {choices(dict.fromkeys(allowed))}")
        out: list[Case] = []
        seen: set[str] = set()
        for block in blocks:
            values = [[v for v in block[k] if not chosen.get(k) or v in chosen[k]] for k in names]
            for plugin, method, grad, seed, device, *extra in itertools.product(*values):
                tols = [(None, None)] if method in FIXED_METHODS else \
                    [(t["rtol"], t["atol"]) for t in block["tolerances"]]
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
    names = registry.workload_names()
    if workload_name not in names:
        raise SuiteError(f"unknown value {workload_name!r} for suite.workload; valid: {choices(names)}")
    w = registry.get_workload(workload_name)
    # A workload may add keys to a common section (e.g. measure.fairness_steps) or add sections.
    schema = {k: dict(v) for k, v in COMMON_SCHEMA.items()}
    for name, keys in w.sections.items():
        schema[name] = schema.get(name, {}) | keys
    schema["matrix"] = schema["matrix"] | w.axes
    defaults = {k: dict(v) for k, v in COMMON_DEFAULTS.items()}
    for name, values in w.defaults.items():
        defaults[name] = defaults.get(name, {}) | values
    return schema, defaults, _COMMON_REQUIRED + tuple(w.required)


def _validate(raw: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    suite_section = raw.get("suite", {})
    workload = suite_section.get("workload", "train") if isinstance(suite_section, dict) else "train"
    schema_all, defaults, required = schema_for(workload)
    for key in raw:
        if key not in schema_all and key != "claims":
            raise SuiteError(f"unknown section [{key}] in {where}; valid: {choices([*schema_all, 'claims'])}")
        if key != "claims":  # [claims] is a table of claim tables, checked by odebench.claims below
            check_section(key, raw[key], schema_all[key])  # a typo is reported before a missing section
    for key in required:
        if key not in raw:
            raise SuiteError(f"{where} has no [{key}] section")
    config = {}
    for name, schema in schema_all.items():
        section = merge(defaults.get(name, {}), raw.get(name, {}))
        config[name] = check_section(name, section, schema)
    for axis in registry.get_workload(workload).axes:
        if axis not in config["matrix"]:
            raise SuiteError(f"{where}: [matrix] has no {axis!r} (the {workload} workload needs it)")
    matrix_schema = schema_all["matrix"]
    for i, inc in enumerate(config["matrix"]["include"]):
        for key, value in inc.items():
            if key == "tolerances":
                _check_tolerances(value, f"matrix.include[{i}].tolerances")
                continue
            if key == "include" or key not in matrix_schema:
                axes = [k for k in matrix_schema if k != "include"]
                raise SuiteError(f"unknown key {key!r} in matrix.include[{i}]; valid: {choices(axes)}")
            check_value(f"matrix.include[{i}].{key}", value if isinstance(value, list) else [value],
                         *matrix_schema[key])
    _check_tolerances(config["matrix"]["tolerances"], "matrix.tolerances")
    if config["measure"]["launch"] == "fork" and not config["measure"]["threads"]:
        # numpy's OpenBLAS starts a thread per core when imported, and a process with threads
        # cannot be forked safely: only a thread count the environment can pin makes fork work.
        raise SuiteError(f"{where}: measure.launch = 'fork' needs measure.threads > 0 (a launcher with "
                         "numpy's thread pool cannot fork safely); valid: set measure.threads, or launch = 'exec'")
    if "name" not in config["suite"]:
        raise SuiteError(f"{where}: [suite] has no 'name'")
    registry.get_workload(workload).validate(config, where)
    from odebench import claims  # here: importing odebench (a case's process) need not load pandas

    config["claims"] = claims.validate(raw.get("claims", {}), registry.get_workload(workload), where)
    return config


def _check_tolerances(tolerances: Any, where: str) -> None:
    """A list of ``{rtol, atol}`` tables, each value a positive number."""
    if not isinstance(tolerances, list) or not all(isinstance(t, dict) for t in tolerances):
        raise SuiteError(f"{where} must be a list of {{ rtol = ..., atol = ... }} tables, got {tolerances!r}")
    for i, tol in enumerate(tolerances):
        for key in tol:
            if key not in _TOL_KEYS:
                raise SuiteError(f"unknown key {key!r} in {where}[{i}]; valid: rtol, atol")
        for key in _TOL_KEYS:
            if key not in tol:
                raise SuiteError(f"{where}[{i}] has no {key!r}")
            check_value(f"{where}[{i}].{key}", tol[key], _FLOAT, "pos")


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


def parse_overrides(overrides: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Dotted overrides (``{"measure.repeats": 3}``) as a partial suite (``{"measure": {"repeats": 3}}``).

    Raises:
        SuiteError: for a key that is not ``section.key``.
    """
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not section or not key or "." in key:
            raise SuiteError(f"override {dotted!r} must be SECTION.KEY, e.g. measure.repeats")
        out.setdefault(section, {})[key] = value
    return out


def load_suite(path: str | Path, profile: str | None = None,
               overrides: dict[str, Any] | None = None, problem: str | None = None) -> Suite:
    """Read, merge the profile and the overrides into, and validate a suite.

    Every profile the file defines is validated, not only the chosen one: a typo in a
    profile that this run does not use is still an error now rather than on the day
    someone selects it.

    ``default`` always means what runs without ``--profile``: the profile that
    ``suite.default_profile`` names, else the base settings, which then go by ``default``.
    A suite that names a default profile and wants its base settings reachable defines an
    empty profile for them (the mnist suite's ``full``).

    Arguments:
        path: a suite folder (``suites/spiral``) or its ``suite.toml``.
        profile: a profile name defined under ``[profiles.NAME]``; None or ``default``: the
            suite's default (see above).
        overrides: settings that replace the file's and the profile's, as dotted keys
            (``{"measure.repeats": 5, "measure.timeout_s": 60.0}``), checked against the
            same schema as the file. This is the one way the command line, ``regress`` and
            asv change a suite's settings.
        problem: a problem of the user's, ``module:function`` or an ``odebench.problems``
            entry point (:mod:`odebench.problemload`; the module is looked for on ``sys.path``,
            then in the current folder, then in the suite's folder), checked and made the
            suite's problem input by its workload (:meth:`odebench.Workload.use_problem`).

    Raises:
        SuiteError: on a missing file, malformed TOML, any invalid key or value, an unknown
            profile, a ``default_profile`` that is no profile, or a profile named ``default``;
            for a workload that takes no problem of the user's.
        odebench.ProblemError: for a problem that does not load or check (one line).
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
    for name, body in profiles.items():
        if not isinstance(body, dict):
            raise SuiteError(f"[profiles.{name}] in {file} must be a table, got {body!r}")
        _validate(merge(raw, body), f"{file} (profile {name!r})")
    chosen = default if profile in (None, "default") else profile
    if chosen != "default":
        if chosen not in profiles:
            valid = [f"{n} (the default)" if n == default != "default" else n for n in names]
            raise SuiteError(f"unknown profile {chosen!r} for suite {base['suite']['name']!r}; "
                             f"valid: {choices(valid)}")
        raw = merge(raw, profiles[chosen])
    if overrides:
        raw = merge(raw, parse_overrides(overrides))
        where = f"{file} (profile {chosen!r}, with overrides {', '.join(overrides)})"
    else:
        where = f"{file} (profile {chosen!r})"
    config = _validate(raw, where)
    from odebench import claims

    claims.check_profiles(config["claims"], names, where)
    if problem is not None:
        from odebench import problemload

        workload = registry.get_workload(config["suite"]["workload"])
        if not workload.takes_problem:
            takers = [n for n in registry.workload_names() if registry.get_workload(n).takes_problem]
            raise SuiteError(f"suite {config['suite']['name']!r} (workload {workload.name}) takes no problem of yours "
                             f"(--problem); valid: a suite of the {', '.join(takers)} workload")
        user, spec, folder = problemload.load_problem(problem, search=(str(file.parent.resolve()),))
        workload.use_problem(config, problemload.check(user, spec, folder))
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
        raise SuiteError(f"unknown value {default!r} for suite.default_profile; valid: {choices(profiles)}")
    return default, ([] if default != "default" else ["default"]) + list(profiles)


#: The small profile the benchmarks and the regression check run, first found: a suite's
#: dedicated ``asv`` profile, its ``smoke`` profile (seconds, for tests), its ``quick`` one
#: (minutes), else the base settings.
PROFILE_PREFERENCE = ("asv", "smoke", "quick")


def pick_profile(suite_dir: str | Path) -> str:
    """The small profile of a suite folder (see :data:`PROFILE_PREFERENCE`)."""
    text = suite_file(suite_dir).read_text()
    profiles = tomllib.loads(text).get("profiles", {})
    return next((p for p in PROFILE_PREFERENCE if p in profiles), "default")
