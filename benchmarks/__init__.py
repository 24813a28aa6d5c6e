"""Benchmarks against the peers (captum, inseq, TransformerLens, Quantus): ``python -m benchmarks``
or ``xattr-nb bench``. See ``benchmarks/RESULTS.md``."""
