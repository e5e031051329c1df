"""Rebuild every committed report and results table from the committed records.

``python benchmarks/regenerate.py`` runs, from the repository root, what wrote each committed
report: ``pgm bench report`` of every suite folder under ``benchmarks/results`` (with the
adapters' step-time files for the suites of the bench), of the method study's folders under
``benchmarks/results/method`` (``--split valid`` too where a selection reads validation scores),
and of the retrieval benchmark's folders under ``benchmarks/results/av_digits``; then the tables of
README.md and docs/method.md (``benchmarks/readme_tables.py``). ``--check`` rebuilds into a
temporary folder and exits 1 naming every committed file that differs (nothing is written).
``--only FOLDER ...`` rebuilds only those reports (their folders under ``benchmarks/results``:
``mosi``, ``method/mosi``), then the tables: after new records of one suite, minutes instead of
the whole set.
Run it from a clean tree after a change to the report: committed results come from committed
code.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pgm_plugins.bench.report import find_suites
from pgm_plugins.bench.report import main as report_main
from pgm_plugins.errors import choices_text, did_you_mean

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: folders under ``benchmarks/results`` that hold other benchmarks' folders, not a suite's records
#: (``machine``: committed cells rerun on another machine, read by ``machine_noise.py``)
OTHER_ROOTS = ("method", "av_digits", "machine")
#: method-study folders whose settings were selected on validation (a report-valid/ too)
VALID_SPLIT = ("synthetic", "design")


def _jobs() -> list[tuple[Path, str, Path, dict[str, object]]]:
    """(results root, suite, committed report folder, report options) of every report."""
    steps = sorted(REPO.glob("adapters/*/benchmarks/results/step_time*.json"))
    jobs: list[tuple[Path, str, Path, dict[str, object]]] = []
    for suite in find_suites(RESULTS):  # every suite of the bench with committed records
        if suite not in OTHER_ROOTS:
            jobs.append((RESULTS, suite, RESULTS / suite / "report", {"step_times": steps}))
    for root in (RESULTS / name for name in OTHER_ROOTS):
        for folder in sorted(p for p in root.glob("*") if (p / "report").is_dir()):
            jobs.append((root, folder.name, folder / "report", {}))
            if root.name == "method" and folder.name in VALID_SPLIT:
                jobs.append((root, folder.name, folder / "report-valid", {"split": "valid"}))
    return jobs


def _differs(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b)
    out = [*cmp.left_only, *cmp.right_only, *cmp.diff_files]
    return [str(b / name) for name in out if not name.endswith(".png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on a diff")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="FOLDER",
        help="rebuild only these reports (folders under benchmarks/results, e.g. mosi, "
        "method/mosi), then the tables",
    )
    args = parser.parse_args(argv)
    jobs = _jobs()
    if args.only:
        names = {
            str(root.relative_to(RESULTS) / suite).removeprefix("./"): i
            for i, (root, suite, _, _) in enumerate(jobs)
        }
        unknown = [n for n in args.only if n.strip("/") not in names]
        if unknown:
            print(
                f"regenerate.py: --only {unknown[0]!r} is not a report folder under "
                f"benchmarks/results.{did_you_mean(unknown[0], names)} Folders: "
                f"{choices_text(names)}",
                file=sys.stderr,
            )
            return 2
        wanted = {n.strip("/") for n in args.only}
        jobs = [
            job
            for job in jobs
            if str(job[0].relative_to(RESULTS) / job[1]).removeprefix("./") in wanted
        ]
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for root, suite, committed, options in jobs:
            out = Path(tmp) / root.relative_to(RESULTS) / suite / committed.name
            rel_root = root.relative_to(REPO)
            code = report_main(suite, rel_root, out, "none", **options)  # type: ignore[arg-type]
            if code != 0:
                print(
                    f"pgm bench report {suite} --results {rel_root}: exit {code}", file=sys.stderr
                )
                return code
            if args.check:
                bad += _differs(out, committed)
            else:
                for png in committed.glob("*.png"):
                    png.unlink()
                shutil.copytree(out, committed, dirs_exist_ok=True)
    tables = [sys.executable, str(REPO / "benchmarks" / "readme_tables.py")]
    for extra in ([], ["--file", str(REPO / "docs" / "method.md")]):
        done = subprocess.run([*tables, *extra, *(["--check"] if args.check else [])], cwd=REPO)
        if done.returncode != 0:
            bad.append(f"tables of {extra[-1] if extra else 'README.md'}")
    if bad:
        print("differs from the records:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
