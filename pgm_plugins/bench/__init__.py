"""The benchmark engine behind ``pgm bench``: data sets with a digest, bench hosts, arms (PgM,
its ablations and the controls), the runner (one training loop for every suite), the result
record (``record.py``), statistics and the report. Imports ``pgm_plugins.block`` and the public
injection API, never the reverse; ``docs/architecture.md`` draws the layers.
"""
