"""asv's benchmark_dir (asv.conf.json): each suite folder's asv_bench.py is generated from its suite.toml."""
