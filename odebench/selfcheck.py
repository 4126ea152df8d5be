"""Check that this installation can run everything odebench ships: ``python -m odebench.selfcheck``.

CI runs it right after installing, so that a missing framework or a missing data set fails
the build with the reason instead of turning into skipped tests and "unavailable" rows.

It checks that every built-in plugin — every ``odebench.plugins`` entry point that the
``odebench`` distribution itself declares in ``pyproject.toml``, so a later built-in is
covered without editing this file — imports and is available, and that the MNIST files
verify (header, size and published MD5, as ``odebench data mnist`` does) in the data folder:
``--data-dir``, else ``$ODEBENCH_DATA``.

Output: one line per problem and exit code 1, or one ``selfcheck ok: ...`` line and exit 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys

from odebench import registry

DISTRIBUTION = "odebench"


def builtin_plugins() -> list[str]:
    """Names of the plugins the ``odebench`` distribution registers itself (its entry points).

    Raises:
        importlib.metadata.PackageNotFoundError: when odebench is not installed as a
            distribution (e.g. run from a source tree without ``pip install -e .``).
    """
    eps = importlib.metadata.distribution(DISTRIBUTION).entry_points
    return sorted({ep.name for ep in eps if ep.group == registry.GROUP})


def plugin_problems() -> list[str]:
    """One line per built-in plugin that is not registered or not available here."""
    problems = []
    registered = set(registry.plugin_names())
    for name in builtin_plugins():
        if name not in registered:
            problems.append(f"plugin {name}: declared by odebench but not registered (reinstall odebench)")
            continue
        reason = registry.entry(name).available()
        if reason:
            problems.append(f"plugin {name}: {reason}")
    return problems


def data_problems(data_dir: str | None) -> list[str]:
    """One line when the MNIST files are missing from ``data_dir`` or fail verification.

    Arguments:
        data_dir: the folder to check (the mnist folder or one holding ``mnist/``); None
            when neither ``--data-dir`` nor ``$ODEBENCH_DATA`` gave one.
    """
    from odebench.data import MNISTError, mnist_status

    if not data_dir:
        return ["MNIST: no data folder: set $ODEBENCH_DATA (or pass --data-dir) to the folder with the MNIST files"]
    try:
        mnist_status(data_dir)
    except MNISTError as err:
        return [f"MNIST in {data_dir}: {err}"]
    return []


def main(argv: list[str] | None = None) -> int:
    """Run the checks; print one line per problem (or one ok line). Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m odebench.selfcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("ODEBENCH_DATA"),
                        help="folder with the MNIST files (default: $ODEBENCH_DATA)")
    parser.add_argument("--no-data", action="store_true", help="check the plugins only")
    args = parser.parse_args(argv)

    problems = plugin_problems()
    if not args.no_data:
        problems += data_problems(args.data_dir)
    for line in problems:
        print(f"selfcheck: {line}")
    if problems:
        return 1
    data = "" if args.no_data else f"; MNIST verified in {args.data_dir}"
    print(f"selfcheck ok: built-in plugins {', '.join(builtin_plugins())} available{data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
