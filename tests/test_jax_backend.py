"""The JAX backend against PyTorch built from the same numpy weights (float64).

One float64 trainer (classical RK4 on the window's grid, backprop) is compiled once per
module; torch solves the same windows with a hand-written classical RK4 and autograd, so
the two agree to rounding: the loss to 1e-10 relative, and one ``torch.optim.RMSprop``
step (defaults) to the same tolerance.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("diffrax")
torch = pytest.importorskip("torch")

from odebench.backends.base import Batch  # noqa: E402
from odebench.models import MLPSpec, mlp_weights  # noqa: E402
from odebench.problems import LinearSpiral  # noqa: E402

SPEC = MLPSpec((2, 50, 2), "tanh")
LR = 1e-3
torch.set_num_threads(1)  # tiny tensors: threads only contend with XLA's compiler on 2 cores


@functools.cache
def _spiral() -> tuple[np.ndarray, np.ndarray]:
    problem = LinearSpiral()
    return problem.ts, problem.exact()


def spiral_batch(seed: int, batch_size: int = 16, batch_time: int = 10) -> Batch:
    """16 random windows of 10 consecutive points of the 500-point spiral on [0, 25]."""
    ts, truth = _spiral()
    rng = np.random.default_rng(seed)
    starts = rng.choice(len(ts) - batch_time, size=batch_size, replace=False)
    ys = np.stack([truth[starts + i] for i in range(batch_time)])
    return Batch(y0=truth[starts], ts=ts[:batch_time] - ts[0], ys=ys)


def torch_field(weights) -> torch.nn.Module:
    layers = []
    for i, (w, b) in enumerate(weights):
        lin = torch.nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def torch_rk4_loss(net: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Classical RK4 stepping on ``batch.ts`` (the tableau of the diffrax plugin's rk4-classic)."""
    ts = torch.from_numpy(batch.ts)
    y = torch.from_numpy(batch.y0)
    out = [y]
    for t0, t1 in zip(ts[:-1], ts[1:]):
        h = t1 - t0
        k1 = net(y)
        k2 = net(y + h * k1 / 2)
        k3 = net(y + h * k2 / 2)
        k4 = net(y + h * k3)
        y = y + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
        out.append(y)
    return torch.mean((torch.stack(out) - torch.from_numpy(batch.ys)) ** 2)


@pytest.fixture(scope="module", autouse=True)
def _x64():
    """make_trainer(dtype="float64") turns jax_enable_x64 on for the process (by design: the
    runner uses a process per case); the tests put it back afterwards."""
    import jax

    before = jax.config.read("jax_enable_x64")
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(scope="module")
def setup():
    from odebench.backends.jax import make_trainer
    from odebench_plugins.diffrax_solvers import DiffraxPlugin

    weights = mlp_weights(SPEC, seed=0)
    trainer = make_trainer(DiffraxPlugin(), SPEC, weights, method="rk4-classic", rtol=1e-7, atol=1e-9,
                           grad_mode="backprop", max_steps=1000, lr=LR, dtype="float64")
    batches = [spiral_batch(seed) for seed in range(4)]
    jbs = [trainer.to_batch(b) for b in batches]  # compiles once: same shapes
    handles, after_one = [], None
    for jb in jbs:
        handles.append(trainer.forward(jb))
        trainer.backward(handles[-1])
        after_one = after_one or trainer.parameters_numpy()
    trainer.sync()
    return dict(trainer=trainer, weights=weights, batches=batches, jbs=jbs, handles=handles,
                after_one=after_one, after=trainer.parameters_numpy())


def test_initial_loss_equals_torch(setup):
    net = torch_field(setup["weights"])
    with torch.no_grad():
        expected = float(torch_rk4_loss(net, setup["batches"][0]))
    got = setup["trainer"].loss_value(setup["handles"][0])  # the fused step's pre-update loss
    assert got == pytest.approx(expected, rel=1e-10)


def test_one_rmsprop_step_equals_torch(setup):
    """The first fused step (solve, loss, grad, update) against torch.optim.RMSprop's defaults."""
    net = torch_field(setup["weights"])
    opt = torch.optim.RMSprop(net.parameters(), lr=LR)
    torch_rk4_loss(net, setup["batches"][0]).backward()
    opt.step()
    moved = 0.0
    for got, want, w0 in zip(setup["after_one"], [p.detach().numpy() for p in net.parameters()],
                             [a for wb in setup["weights"] for a in wb]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
        moved = max(moved, float(np.max(np.abs(got - w0))))
    assert moved > 1e-4  # RMSprop's first step moves each weight by about lr/sqrt(0.01) = 1e-2


def test_trained_step_equals_torch_rmsprop(setup):
    """Four fused steps (solve, loss, grad, RMSprop) against the same four in torch."""
    net = torch_field(setup["weights"])
    opt = torch.optim.RMSprop(net.parameters(), lr=LR)
    for batch, handle in zip(setup["batches"], setup["handles"]):
        opt.zero_grad()
        loss = torch_rk4_loss(net, batch)
        assert setup["trainer"].loss_value(handle) == pytest.approx(loss.item(), rel=1e-10)
        loss.backward()
        opt.step()
    for got, want in zip(setup["after"], [p.detach().numpy() for p in net.parameters()]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_one_trace_and_compile_time_apart(setup):
    trainer = setup["trainer"]
    assert trainer.fused is True
    assert trainer.n_traces == 1  # four steps, one trace
    assert isinstance(trainer.compile_s, float) and trainer.compile_s > 0
    trainer.reset()  # back to the initial weights, compiled step kept
    again = trainer.loss_value(trainer.forward(setup["jbs"][0]))
    assert again == trainer.loss_value(setup["handles"][0])
    assert trainer.n_traces == 1


def test_instrumented_counts_and_predict(setup):
    trainer = setup["trainer"]
    trainer.reset()
    before = trainer.parameters_numpy()
    p = trainer.instrumented(setup["jbs"][0])
    assert p.loss == pytest.approx(trainer.loss_value(setup["handles"][0]), rel=1e-12)
    # rk4 on 9 steps: 4 evaluations each. The backward re-runs each stored step once (the
    # checkpointed step loop) and each stage once more (diffrax's stage loop is itself a
    # checkpointed loop), then takes one VJP per stage.
    assert p.nfe_fwd == p.stats.nfe == 36
    assert p.nfe_bwd == 72 and p.n_vjp == 36
    assert all(np.array_equal(a, b) for a, b in zip(before, trainer.parameters_numpy()))  # no update
    problem = LinearSpiral(n_points=50, t1=5.0)
    pred = trainer.predict(problem.ts, np.asarray(problem.y0))
    assert pred.shape == (50, 2) and pred.dtype == np.float64 and np.all(np.isfinite(pred))


def test_instrumented_pass_compiled_once_and_counts_as_the_eager_pass(setup):
    """Every snapshot's instrumented pass reuses one traced program (same shapes), and it counts
    exactly what the eager pass (a fresh jax.vjp in Python) counts, with the same loss."""
    from odebench.backends.jax import instrumented_pass

    trainer = setup["trainer"]
    trainer.reset()
    first = trainer.instrumented(setup["jbs"][0])
    traces = trainer.n_pass_traces
    assert traces >= 1
    passes = [trainer.instrumented(jb) for jb in setup["jbs"]]
    assert trainer.n_pass_traces == traces  # four more passes, no new trace
    y0, ts, ys = setup["jbs"][0]
    eager = instrumented_pass(trainer.plugin, lambda f: trainer._loss(f, y0, ts, ys), trainer.model,
                              method="rk4-classic", max_steps=1000)
    for p in (first, passes[0]):
        assert (p.nfe_fwd, p.nfe_bwd, p.n_vjp) == (eager.nfe_fwd, eager.nfe_bwd, eager.n_vjp) == (36, 72, 36)
        assert p.stats.nfe == eager.stats.nfe == 36
        assert p.loss == pytest.approx(eager.loss, rel=1e-12)
    assert [(p.nfe_fwd, p.nfe_bwd, p.n_vjp) for p in passes] == [(36, 72, 36)] * 4


def test_predictions_and_swap_share_one_trajectory_program(setup):
    """The trainer's predictions and the swap check's evaluation with the trained solver run one
    jitted program, traced once; the float64 reference is its own program, also traced once."""
    from odebench.backends.jax import trajectory_program
    from odebench.swap import Solver, mlp_trajectory

    trainer = setup["trainer"]
    problem = LinearSpiral(n_points=40, t1=4.0)
    y0 = np.asarray(problem.y0)
    kw = dict(trainer.solve_kwargs, max_steps=max(trainer.solve_kwargs["max_steps"], len(problem.ts)))
    program = trajectory_program(trainer.plugin, **kw)
    before = program.n_traces
    preds = [trainer.predict(problem.ts, y0) for _ in range(3)]
    assert program.n_traces == before + 1
    trained = Solver(trainer.plugin, "rk4-classic", 1e-7, 1e-9, None, "float64")
    swap_kw = dict(max_steps=trainer.solve_kwargs["max_steps"], grad_mode="backprop")
    params = trainer.parameters_numpy()
    again = mlp_trajectory(SPEC, params, problem.ts, y0, trained, **swap_kw)
    assert program.n_traces == before + 1  # the swap's trained-solver evaluation: no new trace
    np.testing.assert_array_equal(again, preds[0])
    ref = Solver(trainer.plugin, "dopri5", 1e-9, 1e-11, None, "float64")
    ref_program = trajectory_program(trainer.plugin, method="dopri5", rtol=1e-9, atol=1e-11, step_size=None,
                                     grad_mode="backprop", max_steps=1000)
    ref_before = ref_program.n_traces
    for _ in range(2):
        mlp_trajectory(SPEC, params, problem.ts, y0, ref, **swap_kw)
    assert ref_program.n_traces == ref_before + 1


def test_a_jax_model_is_swapped_to_the_torch_reference_and_agrees_with_its_own_dopri5(setup):
    """The swap's default reference is odebench's own dopri5 for every case, a JAX-trained model too (its
    parameters become a torch field of the same spec): its trajectory agrees with diffrax's own float64
    dopri5 at the same tolerances, so the choice of reference does not move the swapped MSE."""
    pytest.importorskip("torch")
    from odebench.swap import mlp_trajectory, reference_solver

    trainer = setup["trainer"]
    problem = LinearSpiral(n_points=40, t1=4.0)
    y0 = np.asarray(problem.y0)
    settings = {"method": "dopri5", "rtol": 1e-9, "atol": 1e-11, "dtype": "float64"}
    common = reference_solver(trainer.plugin, settings)
    own = reference_solver(trainer.plugin, dict(settings, plugin="own"))
    assert common.plugin.name == "torch_custom" and own.plugin is trainer.plugin
    kw = dict(max_steps=10_000, grad_mode="backprop")
    params = trainer.parameters_numpy()
    torch_ys = mlp_trajectory(SPEC, params, problem.ts, y0, common, **kw)
    jax_ys = mlp_trajectory(SPEC, params, problem.ts, y0, own, **kw)
    np.testing.assert_allclose(torch_ys, jax_ys, rtol=1e-7, atol=1e-10)
    assert np.abs(torch_ys - y0).max() > 0.1  # the model moved the state: the comparison is not of constants


def test_errors_list_choices():
    from odebench.backends.jax import make_trainer
    from odebench_plugins.diffrax_solvers import DiffraxPlugin

    weights = mlp_weights(SPEC, 0)
    kw = dict(method="rk4", rtol=1e-7, atol=1e-9, grad_mode="backprop", max_steps=10, lr=LR)
    with pytest.raises(ValueError, match="valid: rmsprop, adam, sgd"):
        make_trainer(DiffraxPlugin, SPEC, weights, optimizer="lbfgs", **kw)
    with pytest.raises(ValueError, match="valid: float32, float64"):
        make_trainer(DiffraxPlugin, SPEC, weights, dtype="float16", **kw)
    with pytest.raises(ValueError, match="model.sizes"):
        make_trainer(DiffraxPlugin, MLPSpec((2, 8, 2)), weights, **kw)
