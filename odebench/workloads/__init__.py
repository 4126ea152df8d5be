"""The built-in workloads, one package each, registered through the ``odebench.workloads`` entry points.

Each package splits its workload by concern: ``__init__`` holds the
:class:`~odebench.workload.Workload` subclass (its schema and checks), ``case`` what one
case does, ``report`` its tables and figures, and, where it has them, ``schema``, ``rules``,
``drivers`` and ``analysis`` (the pure functions its report is built on).
"""
