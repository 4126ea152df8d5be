"""One failure, one status: a step budget exhausted in the adjoint's reverse solve is ``max_steps``
whichever plugin ran it, with a message that says it was the reverse solve."""

from __future__ import annotations

import pytest
from conftest import write_suite

from odebench import runner
from odebench.suite import load_suite


def test_reverse_solve_out_of_steps_is_max_steps(tmp_path):
    pytest.importorskip("torch")
    folder = write_suite(tmp_path / "s", iterations=2, plugins=("torch_custom",), methods=("dopri5",),
                         grads=("adjoint",))
    toml = folder / "suite.toml"
    # The forward solve takes one step per observation interval (4 for a 5-point window) and fits the
    # budget; the reverse solve of the augmented state needs more and exhausts it, inside backward().
    toml.write_text(toml.read_text().replace("[measure]", "[measure]\nmax_steps = 4\nfairness_steps = 0"))
    suite = load_suite(folder)
    run_dir = runner.new_run_dir(tmp_path / "results", suite.name)
    (record,) = runner.run(suite, suite.cases(), run_dir, runner.RunSpec(str(folder), suite.profile),
                           progress=False)
    assert record["status"] == "max_steps", record["message"]
    assert record["message"].startswith("adjoint reverse solve (backward pass) failed: max_num_steps exceeded")


def test_the_torchdiffeq_drop_in_still_raises_its_error_with_the_status():
    torch = pytest.importorskip("torch")
    from odebench.protocol import SolveFailed
    from odebench_plugins.torch_custom import SolverError, odeint_adjoint, solve

    func = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = func

        def forward(self, t, y):
            return self.net(y)

    y0, ts = torch.tensor([[2.0, 0.0]], dtype=torch.float64), torch.linspace(0, 1, 5, dtype=torch.float64)
    forward_steps = solve(Field(), y0, ts, grad_mode="adjoint").stats.n_steps  # the reverse solve takes more
    ys = odeint_adjoint(Field(), y0, ts, options={"max_num_steps": forward_steps})
    with pytest.raises(SolverError) as info:
        ys.sum().backward()
    assert isinstance(info.value, SolveFailed) and info.value.status == "max_steps"
    assert str(info.value).startswith("max_steps: adjoint reverse solve (backward pass) failed")
