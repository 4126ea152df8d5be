"""asv benchmarks of this suite, generated from its suite.toml (see odebench.asvbench)."""
from pathlib import Path

from odebench.asvbench import make_benchmarks

globals().update(make_benchmarks(Path(__file__).parent, __name__))
