"""The result record: one schema, one reader that upgrades older records, and a cell digest
that covers everything that changes what a cell computes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from test_bench_runner import _records, _runner, registry  # noqa: F401  (fixture)

from pgm_plugins.bench.record import (
    DIGEST_SCHEME,
    REQUIRED,
    SCHEMA_VERSION,
    CellRecord,
    check_record,
    provenance,
    read_record,
    read_records,
    upgrade,
)
from pgm_plugins.bench.runner import RunnerError

COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _one_committed(suite: str = "mosi-standard") -> Path:
    return sorted((COMMITTED / suite).glob("*.json"))[0]


def test_every_required_field_is_documented_in_the_schema_and_in_docs():
    documented = CellRecord.__annotations__
    assert set(REQUIRED) <= set(documented)
    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    missing = [f for f in documented if f"`{f}`" not in text]
    assert missing == []


def test_a_committed_version_1_record_is_read_and_upgraded(tmp_path):
    src = _one_committed()
    raw = json.loads(src.read_text())
    assert "schema_version" not in raw  # written before the schema had a version
    record, why = read_record(src, "mosi-standard")
    assert why is None and record is not None
    assert record["schema_version"] == SCHEMA_VERSION and record["upgraded_from"] == 1
    assert record["metrics"] == raw["metrics"]  # nothing else changes
    assert provenance(record)["scheme"] in (0, 1)


def test_a_record_from_a_newer_pgm_plugins_is_refused_with_what_to_do(tmp_path):
    src = _one_committed()
    raw = json.loads(src.read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    dst = tmp_path / "mosi-standard" / src.name
    dst.parent.mkdir()
    dst.write_text(json.dumps(raw))
    good, problems = read_records(dst.parent, "mosi-standard")
    assert good == [] and len(problems) == 1
    assert f"schema version {SCHEMA_VERSION + 1}" in problems[0].reason
    assert "upgrade pgm-plugins" in problems[0].reason
    with pytest.raises(ValueError, match="newer"):
        upgrade(raw)
    raw["schema_version"] = "two"
    assert "positive integer" in check_record(raw, dst, "mosi-standard")


def test_the_runner_writes_the_current_schema_and_its_records_read_back(registry, tmp_path):  # noqa: F811
    runner = _runner(registry, tmp_path, seeds=[0])
    runner.run(runner.plan(folds=[0]))
    good, problems = read_records(tmp_path / "t", "t")
    assert problems == [] and len(good) == 2
    for _, r in good:
        assert r["schema_version"] == SCHEMA_VERSION and "upgraded_from" not in r
        settings = r["cell_settings"]
        assert settings["digest_scheme"] == DIGEST_SCHEME
        assert settings["code"]["pgm_plugins"]
        assert settings["arm"]["kind"] == {"baseline": "host", "pgm": "pgm"}[r["key"]["arm"]]
        assert ("block_defaults" in settings) == (r["key"]["arm"] == "pgm")
        assert provenance(r)["scheme"] == DIGEST_SCHEME


def test_a_changed_block_default_never_reuses_a_record(registry, tmp_path, monkeypatch):  # noqa: F811
    from pgm_plugins.block import PgMConfig

    runner = _runner(registry, tmp_path, seeds=[0])
    cells = runner.plan(folds=[0])
    runner.run(cells)
    rho = PgMConfig.__dataclass_fields__["lambda_rec"]
    monkeypatch.setattr(rho, "default", rho.default + 0.5)
    assert dataclasses.fields(PgMConfig)  # the patched default is what the runner reads
    again = _runner(registry, tmp_path, seeds=[0])
    with pytest.raises(RunnerError) as err:
        again.run(again.plan(folds=[0]))
    text = str(err.value)
    assert "1 finished cell(s)" in text and "late_fusion pgm fold 0 seed 0" in text
    assert "block_defaults" in text


def test_a_changed_code_version_never_reuses_a_record(registry, tmp_path, monkeypatch):  # noqa: F811
    runner = _runner(registry, tmp_path, seeds=[0])
    runner.run(runner.plan(folds=[0]))
    monkeypatch.setattr("pgm_plugins._version.__version__", "9.9.9")
    again = _runner(registry, tmp_path, seeds=[0])
    with pytest.raises(RunnerError, match=r"(?s)2 finished cell\(s\).*code"):
        again.run(again.plan(folds=[0]))


def test_records_of_the_older_digest_scheme_are_checked_on_what_they_cover(registry, tmp_path):  # noqa: F811
    runner = _runner(registry, tmp_path, seeds=[0])
    cells = runner.plan(folds=[0])
    runner.run(cells)
    from pgm_plugins.bench.runner import cell_digest

    old_keys = ("data_digest", "options", "epochs", "patience", "batch", "host_options", "block")
    for p in (tmp_path / "t").glob("*.json"):
        r = json.loads(p.read_text())
        r["cell_settings"] = {k: v for k, v in r["cell_settings"].items() if k in old_keys}
        r["cell_digest"] = cell_digest(r["cell_settings"])
        del r["schema_version"]
        p.write_text(json.dumps(r))
    assert _runner(registry, tmp_path, seeds=[0]).run(cells)["skipped"] == 2
    longer = _runner(registry, tmp_path, seeds=[0], epochs=3)
    with pytest.raises(RunnerError, match=r"epochs: 2 -> 3"):
        longer.run(longer.plan(folds=[0]))
    good, _ = read_records(tmp_path / "t", "t")
    assert {provenance(r)["scheme"] for _, r in good} == {1}


def test_reader_leaves_out_partial_and_corrupt_files_by_reason(tmp_path):
    folder = tmp_path / "mosi-standard"
    folder.mkdir()
    src = _one_committed()
    shutil.copy(src, folder / src.name)
    raw = json.loads(src.read_text())
    del raw["metrics"]
    other = sorted((COMMITTED / "mosi-standard").glob("*.json"))[1]
    (folder / other.name).write_text(json.dumps(raw))
    third = sorted((COMMITTED / "mosi-standard").glob("*.json"))[2]
    (folder / third.name).write_text(third.read_text()[:100])
    good, problems = read_records(folder, "mosi-standard")
    assert [p.name for p, _ in good] == [src.name]
    reasons = {p.path.name: p.reason for p in problems}
    assert "'metrics'" in reasons[other.name] and "corrupt JSON" in reasons[third.name]


def test_provenance_flags_name_what_a_comparison_mixes():
    from pgm_plugins.bench.record import provenance_flags

    clean = {"commit": "a" * 40, "dirty": False, "digest": "d", "scheme": DIGEST_SCHEME}
    assert provenance_flags([clean, clean]) == []
    flags = provenance_flags(
        [
            clean,
            {**clean, "commit": "b" * 40, "dirty": True},
            {**clean, "scheme": 0, "digest": None},
            {**clean, "scheme": 1},
        ]
    )
    assert flags[0] == "2 commits (aaaaaaaaaa x3, bbbbbbbbbb x1)"
    assert flags[1:] == [
        "1/4 from a tree with uncommitted changes",
        "1/4 predate the cell digest",
        "1/4 with an older digest scheme",
    ]
    assert provenance_flags([{**clean, "commit": None}, clean])[0].startswith("2 commits")
    gpu = {**clean, "device": "cuda:0 (NVIDIA H100 80GB HBM3)"}
    assert provenance_flags([gpu, {**gpu, "device": "cuda:1 (NVIDIA H100 80GB HBM3)"}]) == []
    assert provenance_flags([clean, gpu, gpu]) == ["devices cpu x1, cuda x2"]
    assert provenance_flags([clean, {**clean, "precision": "bf16"}]) == [
        "precisions bf16 x1, fp32 x1"
    ]


def test_the_cpu_of_a_cell_counts_only_where_it_trained_on_the_cpu():
    cpu = {"model": "Xeon", "capability": "AVX512", "isa": ["avx2", "avx512f"]}
    body = {"env": {"machine": {"cpu": cpu}}, "train": {"device": "cpu"}}
    assert provenance(body)["cpu"] == "AVX512: avx2+avx512f"
    on_gpu = {**body, "train": {"device": "cuda:0 (NVIDIA H100 80GB HBM3)"}}
    assert provenance(on_gpu)["cpu"] is None
    assert provenance({"env": {"machine": "odd"}})["cpu"] is None


def test_results_go_under_the_current_folder_unless_told_otherwise(tmp_path, monkeypatch):
    from pgm_plugins.bench.results import default_results_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGM_RESULTS_DIR", raising=False)
    assert default_results_dir() == tmp_path / "pgm-results"
    monkeypatch.setenv("PGM_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert default_results_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv("PGM_RESULTS_DIR", "  ")  # set but blank: the default
    assert default_results_dir() == tmp_path / "pgm-results"


def test_a_results_variable_naming_a_file_is_named_in_the_error(registry, tmp_path, monkeypatch):  # noqa: F811
    from pgm_plugins.bench.runner import Runner

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("PGM_RESULTS_DIR", str(afile))
    suite = _runner(registry, tmp_path / "ok", seeds=[0]).suite
    with pytest.raises(RunnerError, match=r"afile \(from \$PGM_RESULTS_DIR\) is a file"):
        Runner(suite, registry=registry, quiet=True)
    assert afile.read_text() == "x"


def test_the_code_digest_follows_code_not_prose(tmp_path, monkeypatch):
    from pgm_plugins.bench.results import code_digest

    pkg = tmp_path / "pgm_digest_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package."""\n')
    mod = pkg / "host.py"
    mod.write_text('"""Docs."""\n\n\ndef build(width=8):  # a comment\n    return width\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    code_digest.cache_clear()
    first = code_digest("pgm_digest_probe")
    mod.write_text(
        '"""Other docs."""\n\n\ndef build(width=8):\n    """Said."""\n    return width\n'
    )
    code_digest.cache_clear()
    assert code_digest("pgm_digest_probe") == first  # prose changed, not code
    mod.write_text('"""Docs."""\n\n\ndef build(width=16):\n    return width\n')
    code_digest.cache_clear()
    assert code_digest("pgm_digest_probe") != first  # a default changed
    assert code_digest("pgm_no_such_package") is None
    code_digest.cache_clear()


def test_changed_code_never_reuses_a_record(registry, tmp_path, monkeypatch):  # noqa: F811
    runner = _runner(registry, tmp_path, seeds=[0])
    cells = runner.plan(folds=[0])
    runner.run(cells)
    for r in _records(tmp_path / "t").values():
        assert r["cell_settings"]["code"]["pgm_plugins code"]
    monkeypatch.setattr("pgm_plugins.bench.runner.code_digest", lambda package: "0" * 16)
    again = _runner(registry, tmp_path, seeds=[0])
    with pytest.raises(RunnerError, match=r"(?s)2 finished cell\(s\).*code"):
        again.run(cells)


def test_a_record_of_a_newer_pgm_plugins_is_never_run_over(registry, tmp_path):  # noqa: F811
    runner = _runner(registry, tmp_path, seeds=[0])
    cells = runner.plan(folds=[0])
    runner.run(cells)
    path = sorted((tmp_path / "t").glob("*.json"))[0]
    raw = json.loads(path.read_text())
    raw.update(schema_version=SCHEMA_VERSION + 1, future_field=1)
    path.write_text(json.dumps(raw))
    before = path.read_text()
    with pytest.raises(RunnerError, match=r"(?s)newer pgm-plugins.*Upgrade pgm-plugins"):
        _runner(registry, tmp_path, seeds=[0]).run(cells)
    assert path.read_text() == before
