#!/usr/bin/env bash
# Install mmf 1.0.0rc10 the only way that works beside torch 2.x, then this plugin.
#
# `pip install mmf` cannot work: it pins torch 1.5, a yanked omegaconf and a demjson that no longer
# builds. So mmf goes in with --no-deps, followed by the packages it really needs at import time,
# every step under the repository's constraints (torch/torchvision never change). The shims that
# make this mmf import under transformers 5 live in pgm_mmf.compat and are applied at run time.
#
# Usage: PY=/abs/path/to/venv/bin/python adapters/pgm-mmf/install.sh   (idempotent, quiet)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
CONSTRAINTS="$REPO/constraints.txt"
MMF_VERSION="1.0.0rc10"
# What mmf imports, minus what the shims replace (demjson -> demjson3, torchtext -> a stub).
DEPS=(
  "numpy"
  "omegaconf>=2.1,<3"
  "tqdm"
  "torchvision"
  "lmdb"
  "requests"
  "demjson3"
  "transformers>=4.40"
  "scikit-learn"
)

if [ ! -x "$PY" ]; then
  echo "pgm-mmf/install.sh: PY=$PY is not an executable Python; set PY=/abs/path/to/venv/bin/python" >&2
  exit 1
fi

pip_q() {  # quiet: pip's and the build backend's chatter is shown only when a step fails
  local log
  log="$(mktemp)"
  if ! "$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "pgm-mmf/install.sh: pip install $* failed (output above)" >&2
    return 1
  fi
  rm -f "$log"
}

have() {  # have DIST [VERSION]: the distribution is installed (at VERSION when given)
  "$PY" - "$@" <<'PYEOF'
import importlib.metadata as md, sys
try:
    v = md.version(sys.argv[1])
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if len(sys.argv) < 3 or v == sys.argv[2] else 1)
PYEOF
}

if ! have mmf "$MMF_VERSION"; then
  # --no-build-isolation: the sdist builds with the venv's setuptools (and a C compiler for
  # mmf.utils.phoc); nothing is fetched for the build.
  pip_q --no-deps --no-build-isolation "mmf==$MMF_VERSION"
fi
pip_q "${DEPS[@]}"
# Always: an editable install records the entry points, which change with pyproject.toml.
pip_q --no-deps --no-build-isolation -e "$HERE"
# mmf imports only through the shims: check that it does (fails loudly, prints nothing on success).
HF_HUB_OFFLINE=1 "$PY" -c "from pgm_mmf import compat; compat.import_mmf()"
