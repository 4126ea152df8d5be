"""Reference problems: vector fields, Jacobians, torch fields, cached float64 references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from odebench.problems import PROBLEMS, LinearSpiral, Lorenz, Robertson, StiffVanDerPol, VanDerPol
from odebench.problems import reference as reference_mod
from odebench.problems.reference import cache_dir, reference_solution

# short variants keep the tests fast; the defaults are what the suites use
PROBLEM_CASES = {
    "vanderpol": VanDerPol(),
    "vanderpol_stiff": StiffVanDerPol(t1=200.0, n_points=5),
    "lorenz": Lorenz(),
    "robertson": Robertson(n_points=11),
}


@pytest.fixture(scope="module")
def uncached_references() -> dict[str, np.ndarray]:
    """Each short problem's reference, solved once per test session (Robertson's takes seconds)."""
    return {name: problem.reference(use_cache=False) for name, problem in PROBLEM_CASES.items()}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path))
    return tmp_path / "references"


def test_registry():
    for name in ("linear_spiral", "vanderpol", "vanderpol_stiff", "lorenz", "robertson"):
        assert name in PROBLEMS
    assert PROBLEMS["linear_spiral"] is LinearSpiral
    for name in ("vanderpol", "vanderpol_stiff", "lorenz", "robertson"):
        problem = PROBLEMS[name]()
        assert problem.name == name
        assert hash(problem) == hash(PROBLEMS[name]())  # frozen, usable as a key
    assert StiffVanDerPol().mu == 1000.0 and StiffVanDerPol().stiff
    assert not VanDerPol().stiff and not Lorenz().stiff and Robertson().stiff


@pytest.mark.parametrize("name", sorted(PROBLEM_CASES))
def test_rhs_shapes_and_ts(name):
    problem = PROBLEM_CASES[name]
    d = problem.dim
    y = np.linspace(0.1, 0.9, d)
    assert problem.rhs(0.0, y).shape == (d,)
    assert problem.rhs(0.0, list(y)).shape == (d,)
    batch = np.stack([y, 2 * y, -y, 0.5 * y])
    out = problem.rhs(0.0, batch)
    assert out.shape == (4, d)
    np.testing.assert_allclose(out[1], problem.rhs(0.0, 2 * y))
    ts = problem.ts
    assert len(ts) == problem.n_points and ts[0] == problem.t0 and ts[-1] == pytest.approx(problem.t1)
    assert np.all(np.diff(ts) > 0)


@pytest.mark.parametrize("name", sorted(PROBLEM_CASES))
def test_jacobian_matches_finite_differences(name):
    problem = PROBLEM_CASES[name]
    y = np.array(problem.y0, dtype=float) + np.linspace(0.1, 0.3, problem.dim)
    jac = problem.jac(0.0, y)
    eps = 1e-6
    fd = np.empty_like(jac)
    for j in range(problem.dim):
        e = np.zeros(problem.dim)
        e[j] = eps * max(1.0, abs(y[j]))
        fd[:, j] = (problem.rhs(0.0, y + e) - problem.rhs(0.0, y - e)) / (2 * e[j])
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-6 * np.abs(jac).max())


@pytest.mark.parametrize("name", sorted(PROBLEM_CASES))
def test_torch_field_matches_rhs(name):
    torch = pytest.importorskip("torch")
    problem = PROBLEM_CASES[name]
    field = problem.torch_field()
    assert isinstance(field, torch.nn.Module)
    assert list(field.parameters()) == []
    y = np.random.default_rng(0).normal(size=(5, problem.dim))
    out = field(torch.tensor(0.3, dtype=torch.float64), torch.from_numpy(y))
    assert out.dtype == torch.float64 and out.shape == (5, problem.dim)
    np.testing.assert_allclose(out.numpy(), problem.rhs(0.3, y), rtol=1e-14, atol=1e-14)
    out32 = field(torch.tensor(0.3), torch.from_numpy(y).float())
    assert out32.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(PROBLEM_CASES))
def test_reference_agrees_with_independent_lower_precision_solve(name, uncached_references):
    problem = PROBLEM_CASES[name]
    ts = problem.ts
    ref = uncached_references[name]
    assert ref.shape == (len(ts), problem.dim) and ref.dtype == np.float64
    np.testing.assert_array_equal(ref[0], problem.y0)
    # a different method at a looser tolerance, through solve_ivp's own dense output
    atol = np.array(problem.reference_atol) * 1e3
    method = "BDF" if problem.stiff else "LSODA"
    other = solve_ivp(problem.rhs, (ts[0], ts[-1]), problem.y0, method=method, t_eval=ts, rtol=1e-10,
                      atol=atol, jac=problem.jac).y.T
    scale = np.maximum(np.abs(ref).max(axis=0), 1e-300)  # per component (Robertson's y2 ~ 4e-5)
    assert np.max(np.abs(other - ref) / scale) < 1e-6


def test_robertson_reference_conserves_mass(uncached_references):
    ref = uncached_references["robertson"]
    np.testing.assert_allclose(ref.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    assert np.all(ref >= -1e-18)
    assert ref[:, 1].max() == pytest.approx(3.65e-5, rel=1e-2)  # the classic y2 peak


def test_vanderpol_reference_is_periodic_ish():
    # μ = 1: the limit cycle has period ≈ 6.6633 and amplitude ≈ 2.0086
    vdp = VanDerPol()
    ref = vdp.reference(np.linspace(0.0, 30.0, 3001), use_cache=False)
    assert np.abs(ref[1000:, 0]).max() == pytest.approx(2.0086, abs=1e-3)


def test_reference_batched_initial_states():
    lorenz = Lorenz(t1=0.5, n_points=6)
    y0 = np.array([[1.0, 1.0, 1.0], [-8.0, 8.0, 27.0]])
    ref = lorenz.reference(y0=y0, use_cache=False)
    assert ref.shape == (6, 2, 3)
    np.testing.assert_array_equal(ref[:, 1], lorenz.reference(y0=y0[1], use_cache=False))


def test_reference_is_cached_on_disk(cache, monkeypatch):
    vdp = VanDerPol(t1=3.0, n_points=7)
    first = vdp.reference()
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("vanderpol-")

    def no_solving(*args, **kwargs):
        raise AssertionError("the second call must read the cache")

    monkeypatch.setattr(reference_mod, "solve_reference", no_solving)
    np.testing.assert_array_equal(vdp.reference(), first)
    np.testing.assert_array_equal(VanDerPol(t1=3.0, n_points=7).reference(), first)  # equal problem, same key

    # different parameters, output times or initial state are different references
    for other, kwargs in [
        (VanDerPol(mu=2.0, t1=3.0, n_points=7), {}),
        (vdp, {"ts": np.linspace(0.0, 3.0, 8)}),
        (vdp, {"y0": np.array([1.0, 0.0])}),
    ]:
        with pytest.raises(AssertionError, match="second call"):
            other.reference(**kwargs)
    monkeypatch.undo()
    monkeypatch.setenv("ODEBENCH_CACHE", str(cache.parent))
    VanDerPol(mu=2.0, t1=3.0, n_points=7).reference()
    assert len(list(cache.glob("*.npz"))) == 2


def test_cache_skipped_and_corrupt_file_recomputed(cache):
    lorenz = Lorenz(t1=0.5, n_points=6)
    lorenz.reference(use_cache=False)
    assert not cache.exists()
    good = lorenz.reference()
    (path,) = cache.glob("lorenz-*.npz")
    path.write_bytes(b"not an npz file")
    np.testing.assert_array_equal(lorenz.reference(), good)
    assert np.load(path)["ys"].shape == good.shape  # rewritten


def test_cache_dir_locations(monkeypatch, tmp_path):
    monkeypatch.setenv("ODEBENCH_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "references"
    monkeypatch.delenv("ODEBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "odebench" / "references"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "odebench" / "references"


def test_reference_solution_generic(cache):
    # any numpy field can get a cached reference, here the spiral, checked against its exact solution
    spiral = LinearSpiral(t1=2.0, n_points=11)
    ys = reference_solution(spiral.rhs, np.array(spiral.y0), spiral.ts, params={"problem": "spiral"}, stiff=False)
    np.testing.assert_allclose(ys, spiral.exact(), rtol=0, atol=1e-10)
    ys_radau = reference_solution(
        spiral.rhs, np.array(spiral.y0), spiral.ts, params={"problem": "spiral"}, stiff=True
    )
    np.testing.assert_allclose(ys_radau, spiral.exact(), rtol=0, atol=1e-9)
    assert len(list(cache.glob("spiral-*.npz"))) == 2  # the method is part of the key


@pytest.mark.slow
def test_stiff_vanderpol_full_reference():
    vdp = StiffVanDerPol()
    ref = vdp.reference(use_cache=False)
    assert ref.shape == (300, 2)
    assert np.abs(ref[:, 0]).max() == pytest.approx(2.0, abs=0.02)
    other = solve_ivp(vdp.rhs, (0.0, vdp.t1), vdp.y0, method="LSODA", t_eval=vdp.ts, rtol=1e-9, atol=1e-9,
                      jac=vdp.jac).y.T
    assert np.max(np.abs(other[:, 0] - ref[:, 0])) < 1e-3
