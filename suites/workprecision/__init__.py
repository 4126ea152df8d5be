"""Package marker: asv discovers asv_bench.py only in a package."""
