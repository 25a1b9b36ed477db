"""GalleonFS benchmarks (see run.py)."""
