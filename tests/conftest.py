from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (small tensors on a shared 2-core machine run much
    faster so); modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def core_registry():
    """A new registry of pgm-plugins' own plugins only: the built-in adapters and the
    benchmark's data sets and hosts (entry point ``pgm_plugins.bench``, registered here by hand
    since ``load_entry_points=False`` loads no entry point), whatever else is installed.
    Register a test's own plugins on it, then ``refresh()``."""
    from pgm_plugins.bench import plugin as bench_plugin
    from pgm_plugins.registry import PluginRegistry

    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin(bench_plugin, "pgm_plugins.bench")
    registry.refresh()
    return registry


@pytest.fixture
def fresh_registry(core_registry):
    """``core_registry`` made the process-wide registry (what ``pgm_plugins.inject``, the
    ``list_*`` functions and the ``pgm`` command read) for the test; the one before is put back
    after, so a test that registers plugins of its own leaves no trace."""
    from pgm_plugins.registry import use_registry

    with use_registry(core_registry):
        yield core_registry
