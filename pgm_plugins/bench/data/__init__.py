"""The benchmark's data: what a data set is, the built-in ones, where their files are read from.

- :mod:`.bench_data`: :class:`BenchData` and :class:`Fold`, what every factory returns;
- one module per data set: :mod:`.synthetic`, :mod:`.mosi` (with :mod:`.minilm` for the standard
  protocol's text), :mod:`.av_digits`, :mod:`.npz`, :mod:`.pickles` (MMSA / MulT);
- :mod:`.catalog`: registration, :func:`list_datasets`, :func:`load_dataset`,
  :func:`fetch_dataset`;
- :mod:`.location`: the data folder (``--data-dir``, ``$PGM_DATA_DIR``, the user cache);
- :mod:`.fetch`: download, SHA-256 verification and atomic writes, used by each data set's
  recipe (:mod:`.mosi_fetch`, :mod:`.av_digits_fetch`).
"""

from __future__ import annotations

from pgm_plugins.bench.data.bench_data import BenchData, Fold
from pgm_plugins.bench.data.catalog import fetch_dataset, list_datasets, load_dataset
from pgm_plugins.bench.data.location import data_root, locate_data

__all__ = [
    "BenchData",
    "Fold",
    "data_root",
    "fetch_dataset",
    "list_datasets",
    "load_dataset",
    "locate_data",
]
