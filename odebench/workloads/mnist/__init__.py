"""The ``mnist`` workload: Chen et al. 2018's Table 1, measured (DESIGN §6, mnist).

One case trains one of the MNIST models of :mod:`odebench.backends.torch_convnets`
(``odenet``, ``rknet``, ``resnet``, and the review's ``review``; the workload's matrix axis
``model``) as torchdiffeq's
``examples/odenet_mnist.py`` does: SGD with momentum 0.9 (or Adam: ``training.optimizer``),
learning rate ``lr × batch / 128`` (``lr`` as is when ``training.scale_lr`` is false)
decayed ×``lr_decay`` at the epochs ``lr_decay_epochs`` (set per iteration, boundaries at
``int(batches_per_epoch × epoch)``, so fractional epochs work), cross-entropy loss, optional
random-crop augmentation (28×28 crops of the image padded by 4).

Which cases run (the pairing rule). A suite lists its cases with the common matrix plus
``matrix.include`` blocks (``suites/mnist``: ODE-Net in the base product, one block for RK-Net
and one for ResNet), and each model only runs where it is one of Table 1's models (or the review's):

* ``odenet`` solves adaptively (Chen et al.: dopri5 at tol 1e-3): adaptive methods with any
  grad mode the plugin declares; a fixed-step method is not ODE-Net (that is ``rknet``);
* ``rknet`` is fixed-step (``model.step_size``) with ``backprop`` through the steps: fixed-step
  methods only, grad mode ``backprop`` only;
* ``resnet`` has no ODE solve, so it runs once per seed and device: in the first ResNet case of
  the (unfiltered) matrix; its plugin, method and grad mode are labels only;
* ``review`` (Capell et al. 2023's MNIST model, trained with Adam in the suite's ``review``
  profiles) takes fixed steps of ``model.step_size``: fixed-step methods, any grad mode.

Any other point a product produces is a record with status ``unsupported``, its reason, and
``not_applicable = true`` (the report lists it under "Not run"); :func:`validate` rejects a
matrix in which a model has no case it can run.

Measured per case: test accuracy / error (after the last batch, and the best seen), parameter
count, timed seconds per epoch (forward and backward+step apart, each between device syncs with
GC off; data shuffling, augmentation and evaluation are outside the timed region), NFE-F and
NFE-B per training batch (the ODE function's own counter read between the timed regions, mean
over training and per eval point), instrumented passes on a fixed probe batch before training
and after every epoch (harness hook counter, VJPs through ``f``, the library's own count, saved
bytes), peak RSS over each epoch's training loop after returning freed heap memory to the OS
(CUDA: peak allocated), and a history at each evaluation point for the figures. A missing dataset, a failed solve or any exception is the
record's status and one-line message, never an exception.
"""

from __future__ import annotations

from typing import Any

from odebench.schema import SuiteError
from odebench.workload import Workload
from odebench.workloads.mnist import case, report, rules
from odebench.workloads.mnist.schema import AXES, COLUMNS, DEFAULTS, REQUIRED, SECTIONS


class MnistWorkload(Workload):
    """Chen et al. 2018's Table 1 measured: ODE-Net, RK-Net and ResNet trained on MNIST (the mnist suite)."""

    name = "mnist"
    sections = SECTIONS
    defaults = DEFAULTS
    required = REQUIRED
    axes = AXES
    columns = COLUMNS
    summary_note = report.SUMMARY_NOTE

    def validate(self, config: dict[str, Any], where: str) -> None:
        """Subsets fit MNIST, the schedule ascends, and every model has a case it can run."""
        rules.validate(config, where)

    def preflight(self, config: dict[str, Any]) -> None:
        """Every MNIST file is present, well-formed and matches its published checksum."""
        from odebench.data.mnist import MNISTError, load_mnist

        for split in ("train", "test"):
            try:
                load_mnist(split, config["data"]["data_dir"] or None)
            except MNISTError as exc:
                raise SuiteError(f"MNIST {split} data: {exc}") from None

    # What one case does and how the report shows it live in their own modules.
    run_case = staticmethod(case.run_case)
    summary = staticmethod(report.summary)
    figures = staticmethod(report.figures)
    sections_md = staticmethod(report.sections)


__all__ = ["MnistWorkload"]
