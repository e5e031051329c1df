"""Where ``mosi-utterance`` comes from, and its fetch recipe (:func:`fetch_mosi`).

The release's feature files come from declare-lab's repository; the SDK's standard folds are not
published as a file there, so they are embedded here and written as ``standard_folds.json``.
Every file is checked against :data:`pgm_plugins.bench.data.mosi.EXPECTED_SHA256`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pgm_plugins.bench.data.fetch import fetch, sha256_file, write_verified
from pgm_plugins.bench.data.mosi import EXPECTED_SHA256

__all__ = ["MOSI_BASE", "SDK_MOSI_FOLDS", "fetch_mosi"]

#: declare-lab/contextual-utterance-level-multimodal-sentiment-analysis, folder ``data/``. The
#: data README names the repository and folder but no commit, so the URLs follow the default
#: branch; the pinned SHA-256 of every file (``mosi.EXPECTED_SHA256``) guards the content.
MOSI_BASE = (
    "https://raw.githubusercontent.com/declare-lab/"
    "contextual-utterance-level-multimodal-sentiment-analysis/master/data/"
)
#: the CMU multimodal SDK's standard MOSI folds (video ids), written as the data folder's
#: ``standard_folds.json`` (``json.dumps(folds, indent=1)``)
SDK_MOSI_FOLDS = {
    "train": [
        "2iD-tVS8NPw",
        "8d-gEyoeBzc",
        "Qr1Ca94K55A",
        "Ci-AH39fi3Y",
        "8qrpnFRGt2A",
        "Bfr499ggo-0",
        "QN9ZIUWUXsY",
        "9T9Hf74oK10",
        "7JsX8y1ysxY",
        "1iG0909rllw",
        "Oz06ZWiO20M",
        "BioHAh1qJAQ",
        "9c67fiY0wGQ",
        "Iu2PFX3z_1s",
        "Nzq88NnDkEk",
        "Clx4VXItLTE",
        "9J25DZhivz8",
        "Af8D0E4ZXaw",
        "TvyZBvOMOTc",
        "W8NXH0Djyww",
        "8OtFthrtaJM",
        "0h-zjBukYpk",
        "Vj1wYRQjB-o",
        "GWuJjcEuzt8",
        "BI97DNYfe5I",
        "PZ-lDQFboO8",
        "1DmNV9C1hbY",
        "OQvJTdtJ2H4",
        "I5y0__X72p0",
        "9qR7uwkblbs",
        "G6GlGvlkxAQ",
        "6_0THN4chvY",
        "Njd1F0vZSm4",
        "BvYR0L6f2Ig",
        "03bSnISJMiM",
        "Dg_0XKD0Mf4",
        "5W7Z1C_fDaE",
        "VbQk4H8hgr0",
        "G-xst2euQUc",
        "MLal-t_vJPM",
        "BXuRRbG0Ugk",
        "LSi-o-IrDMs",
        "Jkswaaud0hk",
        "2WGyTLYerpo",
        "6Egk_28TtTM",
        "Sqr0AcuoNnk",
        "POKffnXeBds",
        "73jzhE8R1TQ",
        "OtBXNcAL_lE",
        "HEsqda8_d0Q",
        "VCslbP0mgZI",
        "IumbAb8q2dM",
    ],
    "valid": [
        "WKA5OygbEKI",
        "c5xsKMxpXnc",
        "atnd_PF-Lbs",
        "bvLlb-M3UXU",
        "bOL9jKpeJRs",
        "_dI--eQ6qVU",
        "ZAIRrfG22O0",
        "X3j2zQgwYgE",
        "aiEXnCPZubE",
        "ZUXBRvtny7o",
    ],
    "test": [
        "tmZoasNr4rU",
        "zhpQhgha_KU",
        "lXPQBPVc5Cw",
        "iiK8YX8oH1E",
        "tStelxIAHjw",
        "nzpVDcQ0ywM",
        "etzxEpPuc6I",
        "cW1FSBF59ik",
        "d6hH302o4v8",
        "k5Y_838nuGo",
        "pLTX3ipuDJI",
        "jUzDDGyPkXU",
        "f_pcplsH_V0",
        "yvsjCA6Y5Fc",
        "nbWiPyCm4g0",
        "rnaNMUZpvvg",
        "wMbj6ajWbic",
        "cM3Yna7AavY",
        "yDtzw_Y-7RU",
        "vyB00TXsimI",
        "dq3Nf_lMPnE",
        "phBUpBr1hSo",
        "d3_k5Xpfmik",
        "v0zCBqDeKcE",
        "tIrG4oNLFzE",
        "fvVhgmXxadc",
        "ob23OKe5a9Q",
        "cXypl4FnoZo",
        "vvZ4IcEtiZc",
        "f9O3YtZ2VfI",
        "c7UH_rxdZv4",
    ],
}


def fetch_mosi(root: Path, timeout: float) -> list[Path]:
    """Fetch every file of :data:`EXPECTED_SHA256` into ``root`` (the ``mosi-utterance``
    folder); files already there with the right digest are kept."""
    done = []
    for rel, digest in EXPECTED_SHA256.items():
        dest = root / rel
        if rel == "standard_folds.json":
            if not (dest.is_file() and sha256_file(dest) == digest):
                write_verified(dest, json.dumps(SDK_MOSI_FOLDS, indent=1).encode(), digest)
        else:
            fetch(MOSI_BASE + rel, dest, digest, timeout=timeout)
        done.append(dest)
    return done
