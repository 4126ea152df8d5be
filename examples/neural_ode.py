"""A neural ODE of your own, benchmarked: a latent-ODE-style MLP vector field on a batch of
trajectories, in torch, JAX and numpy with the same weights.

    dz/dt = W2 tanh(W1 z + b1) + b2,   z ∈ R^(16 × 4): 16 latent trajectories of dimension 4

Run it through the work-precision suite (from the repository's root):

    odebench run suites/workprecision --problem examples/neural_ode.py:make_problem --profile problem

or from Python (a notebook): ``python examples/run_neural_ode.py``.
"""

import numpy as np

from odebench import Problem

LATENT, HIDDEN, BATCH = 4, 32, 16


def mlp_weights(seed: int = 0) -> list[np.ndarray]:
    """``[W1, b1, W2, b2]``, drawn once in numpy: every framework starts from these."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, (HIDDEN, LATENT)), rng.normal(0, 0.1, HIDDEN),
            rng.normal(0, 0.5, (LATENT, HIDDEN)), rng.normal(0, 0.1, LATENT)]


class LatentMLP(Problem):
    """The latent dynamics of a latent ODE at a fixed set of weights."""

    name = "latent_mlp"
    frameworks = ("torch", "jax", "numpy")

    def __init__(self, seed: int = 0):
        self.w = mlp_weights(seed)
        self.z0 = np.random.default_rng([seed, 1]).standard_normal((BATCH, LATENT))

    def initial_state(self):
        return self.z0

    def times(self):
        return np.linspace(0.0, 2.0, 9)  # 8 equal intervals: fixed steps of 16, 64, ... land on them

    def weights(self):
        return self.w

    def torch_field(self, weights):
        import torch

        class Field(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.l1, self.l2 = torch.nn.Linear(LATENT, HIDDEN), torch.nn.Linear(HIDDEN, LATENT)
                self.double()  # before the copy: float32 parameters would round the shared weights
                with torch.no_grad():  # parameters() is l1.weight, l1.bias, l2.weight, l2.bias: weights' order
                    for p, w in zip(self.parameters(), weights):
                        p.copy_(torch.as_tensor(w))

            def forward(self, t, z):
                return self.l2(torch.tanh(self.l1(z)))

        return Field()

    def jax_field(self, weights):
        import jax
        import jax.numpy as jnp

        # A pytree whose leaves are the weights, in order: JAX differentiates with respect to them.
        return jax.tree_util.Partial(_jax_mlp, [jnp.asarray(w) for w in weights])

    def numpy_field(self, weights):
        w1, b1, w2, b2 = weights
        return lambda t, z: np.tanh(z @ w1.T + b1) @ w2.T + b2


def _jax_mlp(params, t, z):
    import jax.numpy as jnp

    w1, b1, w2, b2 = params
    return jnp.tanh(z @ w1.T + b1) @ w2.T + b2


def make_problem() -> LatentMLP:
    """What ``--problem examples/neural_ode.py:make_problem`` calls."""
    return LatentMLP()
