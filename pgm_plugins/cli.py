"""The ``pgm`` command: ``pgm plugins``, ``pgm adapters [FILTER]``, ``pgm layers M:FACTORY``,
``pgm bench run SUITE`` / ``pgm bench list`` / ``pgm bench report [SUITE]``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pgm_plugins._version import __version__

RESULTS_HELP = "results root (default: $PGM_RESULTS_DIR, else ./pgm-results)"


def _cmd_plugins(args: argparse.Namespace) -> int:
    from pgm_plugins.registry import get_registry

    reg = get_registry()
    for info in sorted(reg.plugins.values(), key=lambda i: i.name):
        dist = f"{info.distribution} {info.version}" if info.distribution else "(built in)"
        status = f"FAILED: {info.error}" if info.error else ", ".join(info.hooks)
        print(f"{info.name:<28} {dist:<32} {status}")
    return 1 if args.strict and any(i.error for i in reg.plugins.values()) else 0


def _cmd_adapters(args: argparse.Namespace) -> int:
    from pgm_plugins.registry import get_registry

    reg = get_registry()
    names = reg.adapters.names(args.filter)
    if not names:
        print(
            f"no adapter matches {args.filter!r}; registered: "
            f"{', '.join(reg.adapters.names()) or '(none)'}",
            file=sys.stderr,
        )
        return 1
    for name in names:
        entry = reg.adapters.entry(name)
        print(f"{name:<28} {entry.value.mode:<12} {entry.plugin:<28} {entry.description}")
    return 0


def _input_spec(text: str) -> Any:
    from pgm_plugins.errors import ConfigError
    from pgm_plugins.injection.model_spec import InputSpec

    try:
        return InputSpec.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _example(args: argparse.Namespace, model: Any) -> Any:
    """The dry run's inputs: ``--example-shapes`` specs or what ``--example-inputs`` returns."""
    import inspect

    from pgm_plugins.errors import ConfigError
    from pgm_plugins.injection.model_spec import example_inputs, resolve_factory

    if args.example_shapes and args.example_inputs:
        raise ConfigError("give --example-shapes or --example-inputs, not both.")
    if args.example_shapes:
        return example_inputs(args.example_shapes, model)
    if not args.example_inputs:
        return None
    make = resolve_factory(args.example_inputs, "CALLABLE")
    try:
        needs_model = any(
            p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in inspect.signature(make).parameters.values()
        )
    except (TypeError, ValueError):
        needs_model = False
    try:
        return make(model) if needs_model else make()
    except Exception as exc:
        raise ConfigError(
            f"--example-inputs {args.example_inputs} failed: {type(exc).__name__}: {exc}. It is "
            "called with the model when it takes an argument, else with none, and returns a "
            "tuple (positional inputs), a dict (keyword inputs) or one tensor."
        ) from exc


def _cmd_layers(args: argparse.Namespace) -> int:
    from pgm_plugins.errors import ConfigError, UnknownNameError, did_you_mean
    from pgm_plugins.injection import format_layers, list_layers
    from pgm_plugins.injection.model_spec import build_model, describe_forward, parse_assignments

    model = build_model(
        args.factory,
        kwargs=parse_assignments(args.kwargs or (), "--kwargs"),
        config=args.config,
        config_kwargs=parse_assignments(args.config_kwargs or (), "--config-kwargs"),
    )
    model.eval()
    example = _example(args, model)
    names = [n for n, _ in model.named_modules() if n]
    try:
        layers = list_layers(model, args.filter, example)
    except Exception as exc:
        if example is None:
            raise
        raise ConfigError(describe_forward(model, example, exc)) from exc
    if not layers and not names:
        raise ConfigError(
            f"{args.factory} built a {type(model).__name__} with no submodules: it has no "
            "layers to put a site on; a site is a layer inside a model (pgm layers "
            "pgm_plugins.toy:LateFusion shows one)."
        )
    if not layers:
        raise UnknownNameError(
            f"no layer matches --filter {args.filter!r} ({len(names)} layers, e.g. "
            f"{', '.join(names[:3]) or '(none)'}).{did_you_mean(args.filter, names)} "
            f"Patterns are fnmatch: '{names[0] if names else 'encoder'}.*' or '*attn*'."
        )
    total = sum(p.numel() for p in model.parameters())
    print(f"{args.factory}: {type(model).__name__}, {total:,} parameters")
    print(format_layers(layers))
    return 0


def _results_dir(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from pgm_plugins.bench.results import default_results_dir

    return Path(args.results) if args.results else default_results_dir()


def _bench_executor(args: argparse.Namespace) -> Any:
    """The executor ``--executor`` / ``--jobs`` / ``--address`` ask for (checked before anything
    runs; ``--jobs N`` > 1 alone means the process pool)."""

    from pgm_plugins.bench.executors import make_executor

    name = args.executor or ("pool" if (args.jobs or 1) > 1 else "inprocess")
    if name == "pool" and args.jobs is None:
        args.jobs = os.cpu_count() or 1  # a worker per core
    return make_executor(name, jobs=args.jobs, address=args.address)


def _cmd_bench_run(args: argparse.Namespace) -> int:

    from pgm_plugins.bench.runner import Runner
    from pgm_plugins.bench.suite import load_suite

    executor = _bench_executor(args)
    # under torchrun rank 0 speaks, writes and reports; the other ranks train in silence
    follower = os.environ.get("WORLD_SIZE", "1") not in ("", "1") and os.environ.get(
        "RANK", "0"
    ) not in ("", "0")
    quiet = args.quiet or follower
    suite = load_suite(args.suite)
    data_dir = args.data_dir or None  # else the data set reads $PGM_DATA_DIR and says so
    threads = args.threads
    if threads is None and executor.name != "inprocess":
        threads = max(1, (os.cpu_count() or 1) // (args.jobs or 1))  # the cores, shared
    #: the runner's keyword options; workers build theirs from the same
    options: dict[str, Any] = {
        "device": args.device or suite.device,
        "precision": args.precision or suite.precision,
    }
    runner = Runner(
        suite, _results_dir(args), data_dir=data_dir, threads=threads, quiet=quiet, **options
    )
    cells = runner.plan(hosts=args.hosts, arms=args.arms, seeds=args.seeds, folds=args.folds)
    if not quiet:
        data = runner.load_data()
        print(
            f"suite {suite.name}: {data.name} ({data.protocol}), {len(cells)} cells "
            f"({sum(runner.done(cells))} done), {runner.threads} thread(s) per cell on "
            f"{runner.device} ({runner.precision}), {executor.describe()}, results in "
            f"{runner.folder}",
            file=sys.stderr,
        )
    try:
        summary = runner.run(cells, executor=executor, retries=args.retries, options=options)
    except KeyboardInterrupt:
        return 130
    if not quiet:
        others = f", {summary['others']} finished by another run" if summary["others"] else ""
        print(
            f"suite {suite.name}: ran {summary['ran']} cells, skipped {summary['skipped']} "
            f"finished ones{others}, {summary['wall_s']:.0f} s"
            + (f" (Ray started in {summary['start_s']:.1f} s)" if executor.name == "ray" else ""),
            file=sys.stderr,
        )
    if summary["failed"]:
        lines = [f"  {text}: {why}" for text, why in summary["failed"]]
        print(
            f"suite {suite.name}: {len(lines)} cell(s) failed (nothing written for them; run "
            "the same command again to retry them):\n" + "\n".join(lines),
            file=sys.stderr,
        )
        return 1
    if args.no_report or follower:
        return 0
    from pgm_plugins.bench import report

    return int(
        report.main(
            suite.name,
            _results_dir(args),
            fmt="none" if args.quiet else "markdown",
            conclude=not args.quiet,
        )
    )


def _cmd_bench_list(args: argparse.Namespace) -> int:
    from pgm_plugins.bench.suite import SuiteError, list_suites, load_suite
    from pgm_plugins.registry import get_registry

    root = _results_dir(args)
    builtin = list_suites()
    print(f"suites (built in; results under {root}):")
    for name in builtin:
        try:
            s = load_suite(name)
        except SuiteError as exc:
            print(f"  {name:<16} cannot run: {exc}")
            continue
        fusions = [a for a in s.arms if not a.startswith("only.")]
        per_fold = len(s.seeds) * (len(s.hosts) * len(fusions) + len(s.arms) - len(fusions))
        cells = str(per_fold * s.folds) if s.folds else f"{per_fold} x folds"
        done = len(list((root / name).glob("*.json"))) if (root / name).is_dir() else 0
        print(
            f"  {name:<16} {s.dataset} "
            f"({s.protocol or _default_protocol(get_registry(), s.dataset)}); "
            f"hosts {', '.join(s.hosts)}; "
            f"arms {', '.join(s.arms)}; seeds {len(s.seeds)}; cells {cells}; done {done}"
        )
    others = _other_suites(root, builtin)
    if others:
        print(f"other suites with results under {root} (pgm bench report NAME):")
        for name, (done, file) in others.items():
            print(f"  {name:<16} done {done}; from {file}")
    reg = get_registry()
    for title, registry in (("data sets", reg.datasets), ("bench hosts", reg.bench_hosts)):
        print(f"{title}:")
        for entry in registry.entries():
            print(f"  {entry.name:<16} {entry.plugin:<24} {entry.description}")
    print("arms (and only.<modality>: the late-fusion host on one modality):")
    for entry in reg.arms.entries():
        print(f"  {entry.name:<16} {entry.plugin:<24} {entry.description}")
    return 0


def _other_suites(root: Any, builtin: Sequence[str]) -> dict[str, tuple[int, str]]:
    """Suite folders under ``root`` that are not built-in suites: name -> (records, the suite
    file their newest record names, "(gone)" when it no longer exists)."""
    import json
    from pathlib import Path

    from pgm_plugins.bench.report import find_suites

    out = {}
    for name in find_suites(root):
        if name in builtin:
            continue
        files = sorted((root / name).glob("*.json"), key=lambda p: p.stat().st_mtime)
        file = "(no suite file recorded)"
        try:
            suite = json.loads(files[-1].read_text(encoding="utf-8")).get("suite") or {}
            if isinstance(suite.get("file"), str) and suite["file"]:
                file = suite["file"] + ("" if Path(suite["file"]).is_file() else " (gone)")
        except (OSError, ValueError, AttributeError):
            file = "(its newest record does not parse)"
        out[name] = (len(files), file)
    return out


def _report_names(names: Sequence[str], root: Any) -> list[str]:
    """The results folders ``pgm bench report`` reads for ``names``: a ``.toml`` path is the
    folder ``pgm bench run`` gives that file (:func:`~pgm_plugins.bench.suite.suite_name`); a
    bare name without a folder of its own is the one ``<name>-<8 hex>`` folder of a suite file
    of that stem, when there is exactly one."""
    import re

    from pgm_plugins.bench.report import ReportError, find_suites
    from pgm_plugins.bench.suite import list_suites, suite_name

    out = []
    for name in names:
        if name.endswith(".toml"):
            out.append(suite_name(name))
            continue
        if (root / name).is_dir():
            out.append(name)
            continue
        if name in list_suites():  # a built-in name never means a user's file of that stem
            out.append(name)
            continue
        pattern = re.compile(re.escape(name) + "-[0-9a-f]{8}")
        found = [s for s in find_suites(root) if pattern.fullmatch(s)]
        if len(found) > 1:
            raise ReportError(
                f"several suite files named {name}.toml have results under {root}: "
                f"{', '.join(found)}; name one of those folders, or give the suite file's path "
                f"(pgm bench report path/to/{name}.toml). `pgm bench list` shows which file "
                "wrote each."
            )
        out.append(found[0] if found else name)
    return out


def _default_protocol(reg: Any, dataset: str) -> str:
    """The protocol a suite without one runs: its data set's first (its default)."""
    try:
        protocols = tuple(getattr(reg.datasets.entry(dataset).value, "protocols", ()) or ())
    except Exception:  # an unknown data set is reported by the suite's own line
        protocols = ()
    return protocols[0] if protocols else "default"


def _cmd_bench_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pgm_plugins.bench import report

    if args.summary:
        return _bench_summary(args)
    out = Path(args.out) if args.out else None
    steps = [Path(f) for f in args.step_times or ()]
    several = len(args.suite) > 1 and out is not None  # then each suite under out/<suite>
    names: list[str | None] = [*_report_names(args.suite, _results_dir(args))] or [None]
    codes = [
        report.main(
            name,
            _results_dir(args),
            out_dir=out / name if several and out is not None and name else out,
            fmt=args.format,
            step_times=steps,
            split=args.split,
        )
        for name in names
    ]
    return max(codes)


def _bench_summary(args: argparse.Namespace) -> int:
    """``pgm bench report SUITE... --summary ARMS``: the compact table over the suites."""
    from pgm_plugins.bench.report import ReportError
    from pgm_plugins.bench.summary import summarise

    if not args.suite:
        print("pgm bench report --summary: name the suite(s) to combine", file=sys.stderr)
        return 2
    try:
        names = _report_names(args.suite, _results_dir(args))
        table = summarise(_results_dir(args), names, args.summary)
    except ReportError as exc:
        print(f"pgm bench report: {exc}", file=sys.stderr)
        return 2
    print("\n".join(table.markdown()))
    return 0


def _cmd_bench_fetch(args: argparse.Namespace) -> int:
    from pgm_plugins.bench.data.catalog import fetch_dataset
    from pgm_plugins.errors import PgMError

    try:
        root = fetch_dataset(args.name, args.cache_dir)
    except (PgMError, OSError) as exc:
        print(f"pgm bench fetch: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name} is in {root}; run suites with --data-dir {root} (or PGM_DATA_DIR={root})")
    if args.cache_dir is None:
        print("  (the user cache: runs read it when neither --data-dir nor PGM_DATA_DIR is set)")
    return 0


def _int_list(kind: str) -> Any:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} {text!r} is not an integer") from None

    return parse


def _positive_of(kind: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{kind} {text!r}: give an integer >= 1")
        return value

    return parse


def _count_of(kind: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"{kind} {text!r}: give an integer >= 0")
        return value

    return parse


def _add_bench(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark suites: run, list, report")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    p = bsub.add_parser("run", help="run a suite (finished cells are skipped)")
    p.add_argument("suite", help="a suite name (pgm bench list) or a path to a .toml file")
    p.add_argument("--hosts", nargs="+", help="only these hosts of the suite")
    p.add_argument("--arms", nargs="+", help="only these arms of the suite")
    p.add_argument("--seeds", nargs="+", type=_int_list("seed"), help="only these seeds")
    p.add_argument("--folds", nargs="+", type=_int_list("fold"), help="only these folds (0-based)")
    p.add_argument("--data-dir", help="folder holding the data sets (else $PGM_DATA_DIR)")
    p.add_argument("--results", help=RESULTS_HELP)
    p.add_argument(
        "--threads",
        type=_positive_of("threads"),
        help="torch threads (default: the suite's, else 1)",
    )
    p.add_argument(
        "--device",
        help="cpu, cuda, cuda:N or auto (default: the suite's, else cpu)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        help="fp32 (default: the suite's), or bf16 / fp16 autocast (fp16 with a grad scaler); "
        "a precision other than fp32 is a different cell",
    )
    p.add_argument(
        "--jobs",
        type=_positive_of("jobs"),
        help="cells at once: N > 1 runs N worker processes (default: one cell at a time in "
        "this process; with --executor pool a worker per core; with ray as many as fit)",
    )
    p.add_argument(
        "--executor",
        help="where cells run: inprocess (default), pool (worker processes, --jobs) or ray "
        "(a Ray cluster: pip install 'pgm-plugins[ray]')",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address for --executor ray (default: $RAY_ADDRESS, else a new local "
        "cluster; 'local': always a new one)",
    )
    p.add_argument(
        "--retries",
        type=_count_of("retries"),
        default=1,
        help="reruns of a cell after an infrastructure failure (a killed worker, out of "
        "memory; default 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    p.add_argument("--no-report", action="store_true", help="do not print the report after")
    p.set_defaults(func=_cmd_bench_run)
    p = bsub.add_parser(
        "list",
        help="suites (cells, done; built-in ones and any others with results), data sets and "
        "bench hosts",
    )
    p.add_argument("--results", help=RESULTS_HELP)
    p.set_defaults(func=_cmd_bench_list)
    p = bsub.add_parser("report", help="tables, statistics and plots of a suite's results")
    p.add_argument(
        "suite",
        nargs="*",
        help="suite name(s) or suite file path(s), as given to `pgm bench run` (default: every "
        "suite with results)",
    )
    p.add_argument("--results", help=RESULTS_HELP)
    p.add_argument("--out", help="folder for report.md / report.csv / plots")
    p.add_argument("--format", default="markdown", help="markdown, csv or none")
    p.add_argument(
        "--step-times",
        nargs="+",
        metavar="FILE",
        help="step-time microbenchmark results to show (adapters/*/benchmarks/results/"
        "step_time*.json); without them the report says none was given",
    )
    p.add_argument(
        "--summary",
        nargs="+",
        metavar="ARM",
        help="print only the compact table of the suites: host | mean primary metric per ARM | "
        "pgm - baseline [95 %%] p (Holm over its rows); writes nothing",
    )
    p.add_argument(
        "--split",
        default="test",
        help="score the cells on 'test' (default) or 'valid' (for choosing between settings "
        "without reading test data; written to report-valid/)",
    )
    p.set_defaults(func=_cmd_bench_report)
    p = bsub.add_parser(
        "fetch", help="download a data set's public files (verified by SHA-256) into a cache"
    )
    p.add_argument("name", help="mosi-utterance or av-digits")
    p.add_argument(
        "--cache-dir",
        help="where to put it (default: the user cache $PGM_CACHE_DIR, else "
        "$XDG_CACHE_HOME/pgm-plugins/data, else ~/.cache/pgm-plugins/data)",
    )
    p.set_defaults(func=_cmd_bench_fetch)


def _add_layers(sub: Any) -> None:
    p = sub.add_parser(
        "layers",
        help="named layers of a model built by MODULE:FACTORY (random weights, no download)",
        description="List a model's named layers (to choose PgM sites), optionally with call "
        "counts and output shapes from one dry run. Nothing is downloaded: the model gets "
        "random weights.",
        epilog="examples:\n"
        "  pgm layers pgm_plugins.toy:LateFusion --example-shapes 2x16 2x8\n"
        "  pgm layers timm:resnet18 --example-shapes 1x3x64x64\n"
        "  pgm layers transformers:CLIPModel --config-kwargs text_config.num_hidden_layers=2 \\\n"
        "      vision_config.num_hidden_layers=2 vision_config.image_size=32 \\\n"
        "      --example-shapes input_ids=2x7:int pixel_values=2x3x32x32\n"
        "  pgm layers transformers:AutoModel --config path/to/config.json "
        "--example-shapes input_ids=2x7:int",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "factory",
        metavar="MODULE:FACTORY",
        help="a class or function that builds the model (pkg.mod:Name), or a model of a zoo "
        "with create_model/list_models (timm:resnet18, open_clip:RN50)",
    )
    p.add_argument("--filter", default="*", help="fnmatch pattern on layer names")
    p.add_argument(
        "--kwargs",
        nargs="+",
        metavar="KEY=VALUE",
        help='arguments for FACTORY; VALUE is JSON (32, true, [1,2], {"a": 1}) or else a '
        "string; a dotted KEY sets one field of a nested mapping",
    )
    p.add_argument(
        "--config",
        metavar="MODULE:CLASS|FILE.json",
        help="build FACTORY(config) (or FACTORY.from_config(config)) from this config class or "
        "a config.json; a Hugging Face model class uses its own config_class by default",
    )
    p.add_argument(
        "--config-kwargs",
        nargs="+",
        metavar="KEY=VALUE",
        help="values for the config, as in --kwargs (text_config.hidden_size=32)",
    )
    p.add_argument(
        "--example-shapes",
        nargs="+",
        type=_input_spec,
        metavar="[NAME=]SHAPE[:int[:HIGH]]",
        help="inputs for a dry run that adds call counts and output shapes: random floats "
        "(2x16 2x8), token ids (2x7:int, below the smallest nn.Embedding size, or 2x7:int:1000), "
        "by keyword when named (input_ids=2x7:int pixel_values=2x3x32x32)",
    )
    p.add_argument(
        "--example-inputs",
        metavar="MODULE:CALLABLE",
        help="a function returning the dry run's inputs (a tuple, a dict of keyword inputs or "
        "one tensor); it gets the model when it takes an argument",
    )
    p.set_defaults(func=_cmd_layers)


class _Parser(argparse.ArgumentParser):
    """No prefix matching of long options (``--arm`` is not taken for ``--arms``): a typo gets
    an error, never another option; subcommand parsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgm", description="PgM blocks in other people's models")
    parser.add_argument("--version", action="version", version=f"pgm-plugins {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="loaded plugins, their versions, hooks and load errors")
    p.add_argument("--strict", action="store_true", help="exit 1 if a plugin failed to load")
    p.set_defaults(func=_cmd_plugins)
    p = sub.add_parser("adapters", help="registered adapters (fnmatch FILTER)")
    p.add_argument("filter", nargs="?", default="*")
    p.set_defaults(func=_cmd_adapters)
    _add_layers(sub)
    _add_bench(sub)
    for leaf in _leaves(parser):
        leaf.set_defaults(parser_=leaf)
    return parser


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that run a command (those without subcommands), depth first."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in a.choices.values() for leaf in _leaves(p)]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown option is refused naming the command's options and the
    nearest one (``--arm`` -> ``--arms``)."""
    from pgm_plugins.errors import did_you_mean

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        leaf: argparse.ArgumentParser = args.parser_
        options = [o for a in leaf._actions for o in a.option_strings if o.startswith("--")]
        flag = next((u.split("=")[0] for u in unknown if u.startswith("-")), unknown[0])
        leaf.error(
            f"unrecognized arguments: {' '.join(unknown)}; options of {leaf.prog!r}: "
            f"{', '.join(options)}.{did_you_mean(flag, options, n=1)}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        from pgm_plugins.errors import PgMError

        if isinstance(exc, PgMError):
            cmd = args.command + (f" {args.bench_command}" if args.command == "bench" else "")
            print(f"pgm {cmd}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
