"""Plugin registry: inline plugins, faked entry points, the installed example plugin, errors."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import types

import pytest
import torch

from pgm_plugins import Adapter, hookimpl
from pgm_plugins.errors import PluginError, UnknownNameError
from pgm_plugins.registry import PluginRegistry


def plugin_module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


def adapters_plugin(*names: str) -> types.ModuleType:
    def pgm_register_adapters(register):
        for n in names:
            register(Adapter(n, sites={"a": "x", "b": "y"}, description=f"adapter {n}"))

    return plugin_module("p", pgm_register_adapters=pgm_register_adapters)


class FakeDist:
    def __init__(self, name: str) -> None:
        self.name, self.version = name, "9.9"


class FakeEntryPoint:
    def __init__(self, name: str, target) -> None:
        self.name, self.dist, self._target = name, FakeDist(f"dist-{name}"), target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.fixture
def fake_entry_points(monkeypatch):
    eps: list[FakeEntryPoint] = []

    def entry_points(group=None):
        assert group == "pgm_plugins"
        return list(eps)

    monkeypatch.setattr(md, "entry_points", entry_points)
    monkeypatch.delenv("PGM_LOAD_PLUGINS", raising=False)
    return eps


def test_inline_plugin_registers_adapters_listed_naturally_sorted():
    reg = PluginRegistry(load_entry_points=False)
    reg.register_plugin(adapters_plugin("zoo.m10", "zoo.m2", "zoo.m1", "other.x"), "inline")
    reg.refresh()
    assert reg.adapters.names("zoo.*") == ["zoo.m1", "zoo.m2", "zoo.m10"]
    assert reg.adapters.names("*", exclude="zoo.m1*") == ["other.x", "toy.late_fusion", "zoo.m2"]
    assert reg.adapters.entry("zoo.m2").plugin == "inline"


def test_entry_points_load_and_failures_are_reported(fake_entry_points):
    fake_entry_points += [
        FakeEntryPoint("good", adapters_plugin("good.a")),
        FakeEntryPoint("broken", ImportError("no module named zoo")),
    ]
    reg = PluginRegistry()
    assert "good.a" in reg.adapters
    assert reg.plugins["good"].distribution == "dist-good"
    assert reg.plugins["good"].hooks == ["pgm_register_adapters"]
    assert reg.plugins["broken"].error == "ImportError: no module named zoo"
    with pytest.raises(PluginError, match=r"'broken' .*failed to load: ImportError"):
        PluginRegistry(strict=True)


def test_load_plugins_allow_list(fake_entry_points, monkeypatch):
    fake_entry_points += [
        FakeEntryPoint("one", adapters_plugin("one.a")),
        FakeEntryPoint("two", adapters_plugin("two.a")),
    ]
    monkeypatch.setenv("PGM_LOAD_PLUGINS", "dist-two")
    assert PluginRegistry().adapters.names() == ["toy.late_fusion", "two.a"]
    monkeypatch.setenv("PGM_LOAD_PLUGINS", "")
    assert PluginRegistry().adapters.names() == ["toy.late_fusion"]
    monkeypatch.delenv("PGM_LOAD_PLUGINS")
    monkeypatch.setenv("PGM_BLOCK_PLUGINS", "one")
    assert PluginRegistry().adapters.names() == ["toy.late_fusion", "two.a"]


def test_misspelt_hook_fails_loudly():
    bad = plugin_module("bad", pgm_register_adaptors=lambda register: None)
    reg = PluginRegistry(load_entry_points=False)
    with pytest.raises(
        PluginError,
        match=r"'bad' implements a hook that does not exist.*"
        r"pgm_register_adapters",
    ):
        reg.register_plugin(bad, "bad")
    assert "bad" not in reg.plugins


def test_duplicate_names_name_both_plugins():
    reg = PluginRegistry(load_entry_points=False)
    reg.register_plugin(adapters_plugin("dup.a"), "first")
    reg.register_plugin(adapters_plugin("dup.a"), "second")
    with pytest.raises(
        PluginError,
        match=r"'dup.a' is registered twice: by plugin "
        r"'(first|second)' and by plugin '(first|second)'",
    ):
        reg.refresh()


def test_invalid_registrations_name_the_plugin():
    def bad_adapter(register):
        register("not an adapter")

    reg = PluginRegistry(load_entry_points=False)
    reg.register_plugin(plugin_module("m", pgm_register_adapters=bad_adapter), "sloppy")
    with pytest.raises(
        PluginError,
        match=r"plugin 'sloppy' registered adapter .*expected a "
        r"pgm_plugins.Adapter",
    ):
        reg.refresh()


def test_unknown_names_suggest_and_list():
    reg = PluginRegistry(load_entry_points=False)
    with pytest.raises(
        UnknownNameError,
        match=r"unknown adapter 'toy.late'.*Did you mean "
        r"'toy.late_fusion'",
    ):
        reg.adapters.entry("toy.late")
    with pytest.raises(KeyError):
        reg.models.entry("nope")


def test_match_adapter_hook_and_predicates():
    from pgm_plugins.toy import LateFusion

    reg = PluginRegistry(load_entry_points=False)
    assert reg.match_adapter(LateFusion()) == "toy.late_fusion"  # the adapter's predicate
    reg.register_plugin(plugin_module("m", pgm_match_adapter=lambda model: "custom.x"), "m")
    assert reg.match_adapter(LateFusion()) == "custom.x"  # the hook comes first


def test_builtins_register_models_through_hooks_and_nothing_of_the_benchmark():
    reg = PluginRegistry(load_entry_points=False)
    assert reg.models.names() == ["toy.late_fusion"]
    spec = reg.models.entry("toy.late_fusion").value
    assert spec.adapter == "toy.late_fusion"
    assert spec.factory()(*spec.example()).shape == (4,)
    # the benchmark sits above the registry: it comes as an entry point, not as a built-in
    assert list(reg.plugins) == ["pgm_plugins.builtin"]
    assert len(reg.datasets) == 0 and len(reg.bench_hosts) == 0


def test_the_benchmark_plugin_is_the_distributions_own_entry_point(monkeypatch):
    monkeypatch.delenv("PGM_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PGM_BLOCK_PLUGINS", raising=False)
    reg = PluginRegistry()
    info = reg.plugins["pgm_plugins.bench"]
    assert (info.distribution, info.error) == ("pgm-plugins", None)
    assert info.hooks == [
        "pgm_register_arms",
        "pgm_register_bench_hosts",
        "pgm_register_datasets",
    ]
    data = reg.datasets.entry("synthetic").value(seeds=[0])
    assert data.name == "synthetic" and set(data.x) == {"a", "b", "c"}
    assert reg.datasets.entry("synthetic").plugin == "pgm_plugins.bench"
    assert "late_fusion" in reg.bench_hosts.names()
    monkeypatch.setenv("PGM_BLOCK_PLUGINS", "pgm_plugins.bench")
    assert "synthetic" not in PluginRegistry().datasets
    monkeypatch.delenv("PGM_BLOCK_PLUGINS")
    monkeypatch.setenv("PGM_LOAD_PLUGINS", "pgm-plugins")
    only = PluginRegistry()
    assert set(only.plugins) == {"pgm_plugins.builtin", "pgm_plugins.bench"}
    assert "late_fusion" in only.bench_hosts


def test_core_registry_fixture_has_the_benchmark_without_entry_points(core_registry):
    assert "synthetic" in core_registry.datasets and "late_fusion" in core_registry.bench_hosts
    assert set(core_registry.plugins) == {"pgm_plugins.builtin", "pgm_plugins.bench"}


def test_an_old_name_hook_still_registers_with_a_warning_naming_the_new_one():
    def pgm_register_hosts(register):
        register("old.model", torch.nn.Identity, "registered under the old hook name")

    reg = PluginRegistry(load_entry_points=False)
    with pytest.warns(
        DeprecationWarning,
        match=r"plugin 'old' implements pgm_register_hosts, deprecated: rename it "
        r"pgm_register_models",
    ):
        reg.register_plugin(plugin_module("old", pgm_register_hosts=pgm_register_hosts), "old")
    reg.refresh()
    assert reg.models.names() == ["old.model", "toy.late_fusion"]
    assert reg.models.entry("old.model").plugin == "old"
    assert reg.plugins["old"].hooks == ["pgm_register_hosts"]


def test_old_api_names_warn_and_return_what_they_returned(fresh_registry):
    import pgm_plugins as pp
    from pgm_plugins.registry import manager

    with pytest.warns(DeprecationWarning, match=r"list_hosts is deprecated: use .*list_models"):
        assert pp.list_hosts("toy.*") == ["toy.late_fusion"]
    with pytest.warns(DeprecationWarning, match=r"\.hosts is deprecated: use .*\.models"):
        assert fresh_registry.hosts is fresh_registry.models
    with pytest.warns(DeprecationWarning, match=r"HostSpec is deprecated: use ModelSpec"):
        assert manager.HostSpec is manager.ModelSpec
    assert "list_hosts" not in pp.__all__


def test_list_functions_say_which_registry_they_read(fresh_registry):
    import pgm_plugins as pp

    assert pp.list_models() == ["toy.late_fusion"]
    assert pp.list_bench_hosts() == ["late_fusion"]
    assert pp.list_bench_hosts("*", exclude="late_*") == []
    assert pp.list_datasets("m*", exclude="mult-*") == ["mmsa-pkl", "mosi-utterance"]
    assert pp.list_adapters() == ["toy.late_fusion"]


def test_use_registry_puts_the_one_before_back_even_on_error():
    from pgm_plugins.registry import get_registry, use_registry

    before = get_registry()
    mine = PluginRegistry(load_entry_points=False, builtins=False)
    with pytest.raises(RuntimeError, match="inside"), use_registry(mine) as installed:
        assert installed is mine and get_registry() is mine
        raise RuntimeError("inside")
    assert get_registry() is before


def run_pgm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgm_plugins.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_example_plugin_is_found_by_pgm_plugins():
    out = run_pgm("plugins", "--strict")
    assert out.returncode == 0, out.stderr
    assert "pgm-example-plugin 0.1.0" in out.stdout
    assert "pgm_match_adapter, pgm_register_adapters" in out.stdout
    out = run_pgm("adapters", "example.*")
    assert out.stdout.startswith("example.two_tower")


def test_pgm_layers_and_cli_errors():
    out = run_pgm("layers", "pgm_plugins.toy:LateFusion", "--example-shapes", "2x16", "2x8")
    assert out.returncode == 0, out.stderr
    assert "encoders.text" in out.stdout and "2x32" in out.stdout
    out = run_pgm("layers", "pgm_plugins.toy:LateFusoin")
    assert out.returncode != 0 and "Did you mean 'LateFusion'" in out.stderr
    out = run_pgm("adapters", "nothing*")
    assert out.returncode == 1 and "no adapter matches 'nothing*'" in out.stderr


def test_zoo_patch_applies_and_undoes_through_the_registry(fresh_registry):
    from pgm_plugins import api

    zoo: dict[str, object] = {"mult": object()}

    def patch_zoo():
        if "mult_pgm" in zoo:
            raise RuntimeError("mult_pgm exists already")
        zoo["mult_pgm"] = object()
        return lambda: zoo.pop("mult_pgm")

    def pgm_register_zoo_patches(register):
        register("fakezoo.mult_pgm", patch_zoo, "adds mult_pgm to the fake zoo")
        register("fakezoo.broken", lambda: None)

    reg = fresh_registry
    reg.register_plugin(plugin_module("z", pgm_register_zoo_patches=pgm_register_zoo_patches), "z")
    reg.refresh()
    assert api.list_zoo_patches("fakezoo.*") == ["fakezoo.broken", "fakezoo.mult_pgm"]
    undo = api.apply_zoo_patch("fakezoo.mult_pgm")
    assert "mult_pgm" in zoo
    undo()
    assert set(zoo) == {"mult"}
    with pytest.raises(PluginError, match="must return a callable that undoes it"):
        api.apply_zoo_patch("fakezoo.broken")
    with pytest.raises(UnknownNameError, match=r"Did you mean 'fakezoo\.mult_pgm'"):
        api.apply_zoo_patch("fakezoo.mult")
    assert api.list_models("toy.*") == ["toy.late_fusion"]
    assert api.list_datasets() == [
        "av-digits",
        "mmsa-pkl",
        "mosi-utterance",
        "mult-pkl",
        "npz",
        "synthetic",
    ]


def test_explain_unmatched_answers_join_the_no_adapter_error(fresh_registry):
    import pgm_plugins as pp
    from pgm_plugins.errors import InjectionError

    def pgm_explain_unmatched(model):
        return f"{type(model).__name__} is a Fancy model the fancy plugin does not support yet"

    reg = fresh_registry
    reg.register_plugin(plugin_module("f", pgm_explain_unmatched=pgm_explain_unmatched), "f")
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(InjectionError, match=r"(?s)Sequential is a Fancy model.*no adapter"):
        pp.inject(model)
    assert not hasattr(model, "pgm_block")
