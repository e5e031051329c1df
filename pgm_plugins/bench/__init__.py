"""The benchmark engine: data sets with a digest, arms (PgM, its ablations and the controls),
a trainer, result files, statistics. Imports ``pgm_plugins.block`` and the public injection API,
never the reverse. ``benchmarks/method.py`` is its command line for the method study (issue 8).
"""
