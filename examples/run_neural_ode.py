"""The neural ODE of ``neural_ode.py`` through the work-precision suite, from Python.

    python examples/run_neural_ode.py            # every framework's plugin (the suite's `problem` profile)
    python examples/run_neural_ode.py --quick    # torch_custom and scipy, dopri5 (the `quick` profile; CI)

Prints the matched-error table (the cost of each plugin × method × grad mode at errors 1e-3,
1e-6, 1e-9) and the report's path; the run folder holds the records, report.md and the figures.
"""

import argparse
from pathlib import Path

import odebench

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None):
    """Run the example and return its :class:`odebench.notebook.RunResult`; ``--quick`` for its CI form,
    ``--results DIR`` for the results root (default: results)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="torch_custom and scipy only, dopri5 (seconds per case)")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    args = parser.parse_args(argv)
    narrow = dict(profile="quick", plugins=["torch_custom", "scipy"], methods=["dopri5"]) if args.quick \
        else dict(profile="problem")
    result = odebench.run(HERE.parent / "suites" / "workprecision", problem=f"{HERE / 'neural_ode.py'}:make_problem",
                          results=args.results, **narrow)
    print(result.summary.to_markdown(index=False))
    print(f"\nreport: {result.report}")
    return result


if __name__ == "__main__":
    main()
