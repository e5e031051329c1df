"""pgm-mmsa: PgM blocks inside MMSA's MulT, MISA, Self-MM, TFN, LMF and MMIM.

Importing this package does not import MMSA; the factories, trainers and the zoo patch do.
"""

from __future__ import annotations

from pgm_mmsa.adapters import ADAPTERS, KINDS, UnsupportedModelError, host_kind

__all__ = [
    "ADAPTERS",
    "KINDS",
    "UnsupportedModelError",
    "host_kind",
]
__version__ = "0.1.0"
