"""Command line: ``autoprune search | report | export | targets | profile``.

A thin layer over the library: it parses arguments, configures logging and output, and turns
:class:`~autoprune.errors.AutopruneError` into one line on stderr and exit status 2 (a traceback
only with ``--debug``). "FLOPs" means multiply-accumulates everywhere (torchvision's
convention: ResNet-50 at 224x224 = 4.09 GFLOPs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoprune.errors import AutopruneError, ConfigError

__all__ = ["main"]

_logger = logging.getLogger("autoprune.cli")

_BUDGET_HELP = (
    "hard budget <number><unit>, repeatable (all apply; replaces the config's budgets). "
    "Units: gflops|mflops (multiply-accumulates: ResNet-50 at 224x224 = 4.09 GFLOPs), ms|us "
    "(latency on the target), mj|uj (energy per inference), mb|kb (model size at its "
    "bit-widths), mparams|kparams"
)


def _controller_help(listed: bool) -> str:
    """Help of ``--controller``: with ``listed``, every controller and what it is (importing the
    search package costs seconds, so only ``search --help`` asks for it)."""
    if not listed:
        return "search controller (`autoprune search --help` lists them; default nsga2)"
    from autoprune.search import describe_controller, list_controllers

    return "search controller (default nsga2): " + "; ".join(
        f"{name}: {describe_controller(name).rstrip('.')}" for name in list_controllers()
    )


def _set_help(listed: bool) -> str:
    """Help of ``--set``: with ``listed`` (``search --help``), the registered data set names."""
    text = "override a config value, e.g. --set training.epochs=3 (repeatable)"
    if not listed:
        return text
    from autoprune.evaluators import list_datasets

    return (
        f"{text}; data sets for --set data.dataset=NAME: {', '.join(list_datasets())} "
        "(data.root: where the files are; data.download=true lets cifar10/cifar100 fetch them)"
    )


def _parser(*, list_controllers: bool = False) -> argparse.ArgumentParser:
    from autoprune import __version__

    parser = argparse.ArgumentParser(
        prog="autoprune",
        description="Hardware-aware AutoML search for CNN compression. "
        "FLOPs = multiply-accumulates.",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = sub.add_parser(
        "search",
        help="search compressed architectures under budgets",
        description="Search widths, depth, resolution and bit-widths of a "
        "base CNN for a target device under hard budgets; resumable.",
    )
    search.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config (default: configs/default.yaml, the embedded default)",
    )
    search.add_argument(
        "--target", help="device profile name or YAML path (see `autoprune targets`)"
    )
    search.add_argument(
        "--budget", action="append", default=None, metavar="SPEC", help=_BUDGET_HELP
    )
    search.add_argument("--controller", help=_controller_help(list_controllers))
    search.add_argument(
        "--evaluator",
        help="how candidates are trained (default scratch-e): scratch-e (from scratch, the "
        "training epochs), scratch-b (from scratch, the base model's compute), finetune (the "
        "trained base's L1-largest channels, fine-tuned), distill (from scratch, the trained "
        "base as teacher), proxy (a zero-cost score at initialisation, no training)",
    )
    search.add_argument(
        "--trials", type=int, help="total trials of the study (resume counts finished ones)"
    )
    search.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="stop this invocation after SECONDS"
    )
    search.add_argument("--seed", type=int, help="seed of the controller, data split and training")
    search.add_argument(
        "--run-dir",
        type=Path,
        help="run directory (default: runs/<config>-<target>-<budgets>-<controller>-seed<N>); "
        "the same directory resumes the run",
    )
    search.add_argument(
        "--storage", help="Optuna storage URL (default: SQLite file in the run directory)"
    )
    search.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help=_set_help(list_controllers),
    )
    search.add_argument(
        "--rpc-tracker",
        metavar="HOST:PORT",
        help="TVM RPC tracker of the target board: latency is measured there",
    )
    search.add_argument("--rpc-key", metavar="KEY", help="key the board registered under")
    search.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="run the trials on this Ray cluster (its head's HOST:PORT, or auto); the run "
        "directory must be on a file system every node shares",
    )
    search.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="at most N trials at once, as Ray Tune trials (N > 1 without --ray-address starts "
        "a local Ray instance; default 1: the plain loop)",
    )
    search.add_argument(
        "--cpus-per-trial", type=float, metavar="N", help="CPUs each Ray trial reserves (1)"
    )
    search.add_argument(
        "--gpus-per-trial", type=float, metavar="N", help="GPUs each Ray trial reserves (0)"
    )
    search.add_argument("--quiet", action="store_true", help="no progress bars or per-trial lines")

    report = sub.add_parser("report", help="print the Pareto front of a run")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument("--format", choices=("table", "json"), default="table")

    export = sub.add_parser("export", help="export trained trials (weights, ONNX, TorchScript)")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, action="append", help="trial number (repeatable)")
    which.add_argument("--pareto", action="store_true", help="every Pareto-front member")
    export.add_argument(
        "--format",
        default="onnx,torchscript",
        help="comma-separated formats: onnx, torchscript, tvm (a library for the run's "
        "target) (default: onnx,torchscript)",
    )
    export.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/export)")
    export.add_argument(
        "--retrain",
        action="store_true",
        help="retrain each trial from scratch at full fidelity first and export those weights "
        "(the deploy shape, the whole training split, the run's epochs, Scratch-B; kept in "
        "RUN_DIR/retrain, so an interrupted retrain continues)",
    )
    export.add_argument(
        "--retrain-evaluator",
        metavar="NAME",
        help="how to retrain: scratch-b (default: the base model's training compute), "
        "scratch-e, finetune or distill",
    )
    export.add_argument(
        "--retrain-epochs", type=int, metavar="N", help="epochs to retrain (default: the run's)"
    )
    export.add_argument(
        "--retrain-samples",
        type=int,
        metavar="N",
        help="training images per epoch (default: the whole training split)",
    )
    export.add_argument(
        "--retrain-seed", type=int, metavar="N", help="training seed (default: the search's)"
    )
    export.add_argument("--quiet", action="store_true", help="no progress bars")

    targets = sub.add_parser("targets", help="list device profiles")
    targets.add_argument("--format", choices=("table", "json"), default="table")

    profile = sub.add_parser("profile", help="costs of one model on one device")
    profile.add_argument("--target", required=True, help="device profile name or YAML path")
    profile.add_argument("--model", required=True, help="model name (resnet18, resnet50, ...)")
    profile.add_argument(
        "--input", default="3x224x224", help="input shape CxHxW (default 3x224x224)"
    )
    profile.add_argument(
        "--num-classes", type=int, default=1000, help="classifier outputs (default 1000)"
    )
    profile.add_argument("--format", choices=("table", "json"), default="table")
    profile.add_argument(
        "--measure",
        action="store_true",
        help="also measure latency: TVM-built code and PyTorch eager on this host (target host), "
        "or TVM-built code on a board behind --rpc-tracker",
    )
    profile.add_argument("--rpc-tracker", metavar="HOST:PORT", help="TVM RPC tracker of the board")
    profile.add_argument("--rpc-key", metavar="KEY", help="key the board registered under")
    profile.add_argument(
        "--tuning-trials",
        type=int,
        default=4,
        metavar="N",
        help="with --measure on this host: MetaSchedule trials per new fused kernel before "
        "timing (default 4; 0 times untuned code, naive loops)",
    )
    profile.add_argument(
        "--tuning-dir",
        type=Path,
        metavar="DIR",
        help="tuning database, shared between calls (default ~/.cache/autoprune/tuning/TARGET)",
    )

    board = sub.add_parser(
        "board",
        help="run ON a board: a TVM RPC server that also reports the board's power rails",
    )
    board.add_argument("--rpc-tracker", required=True, metavar="HOST:PORT", help="TVM tracker")
    board.add_argument("--rpc-key", required=True, metavar="KEY", help="key to register under")
    board.add_argument("--host", default="0.0.0.0", help="address to listen on")
    board.add_argument("--port", type=int, default=9090, help="first port to try (9090)")
    return parser


def _board(args: argparse.Namespace) -> int:
    import time

    from autoprune.hwprofiles import RpcEndpoint
    from autoprune.hwprofiles._board import find_board_sensor, serve_board

    endpoint = RpcEndpoint.parse(args.rpc_tracker, key=args.rpc_key)
    sensor = find_board_sensor()
    if sensor is None:
        print("autoprune: no INA3221 power rails here; energy will be estimated", file=sys.stderr)
    else:
        print(f"autoprune: power rails {', '.join(sensor.rails)}: {sensor.power_w():.2f} W now")
        sensor.close()
    server = serve_board(
        (endpoint.host, endpoint.port), endpoint.key, host=args.host, port=args.port
    )
    print(
        f"autoprune: serving as {endpoint.key!r} through tracker {args.rpc_tracker}; Ctrl-C stops"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 130
    finally:
        server.terminate()  # type: ignore[attr-defined]


def _configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("autoprune: %(message)s"))
    root = logging.getLogger("autoprune")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _default_run_dir(args: argparse.Namespace, config: Any) -> Path:
    stem = args.config.stem if args.config else "default"
    budgets = "-".join(b.spec for b in config.budgets) or "nobudget"
    return Path("runs") / (
        f"{stem}-{config.target}-{budgets}-{config.search.controller}-seed{config.search.seed}"
    )


def _search(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from autoprune._interrupts import interrupts_kept, raise_if_interrupted
    from autoprune.config import load_config
    from autoprune.report import format_front_table, write_report_files
    from autoprune.search import load_hypervolume, load_records, pareto_front, run_search

    overrides = list(args.overrides)
    if args.target is not None:
        overrides.append(f"target={args.target}")
    if args.budget is not None:
        overrides.append("budgets=" + json.dumps(list(args.budget)))
    for flag, key in (
        ("rpc_tracker", "hardware.rpc_tracker"),
        ("rpc_key", "hardware.rpc_key"),
        ("controller", "search.controller"),
        ("evaluator", "evaluator.name"),
        ("trials", "search.trials"),
        ("timeout", "search.timeout_s"),
        ("seed", "search.seed"),
        ("ray_address", "search.ray_address"),
        ("workers", "search.workers"),
        ("cpus_per_trial", "search.cpus_per_trial"),
        ("gpus_per_trial", "search.gpus_per_trial"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    config = load_config(args.config, overrides=overrides)
    from autoprune.search import list_controllers

    if config.search.controller not in list_controllers():
        raise ConfigError(
            f"unknown controller {config.search.controller!r}; valid controllers: "
            f"{', '.join(list_controllers())}"
        )
    from autoprune.evaluators import EVALUATORS, PROXIES

    if config.evaluator.name not in EVALUATORS:
        raise ConfigError(
            f"unknown evaluator {config.evaluator.name!r}; valid evaluators: "
            f"{', '.join(EVALUATORS)}"
        )
    if config.evaluator.proxy not in PROXIES:
        raise ConfigError(
            f"unknown evaluator.proxy {config.evaluator.proxy!r}; valid proxies: "
            f"{', '.join(PROXIES)}"
        )
    run_dir = args.run_dir or _default_run_dir(args, config)
    command = "autoprune " + " ".join(shlex.quote(a) for a in args.argv)
    title = (
        f"{config.model.name} on {config.target}, budgets: "
        f"{', '.join(b.spec for b in config.budgets) or 'none'}"
    )
    try:
        with interrupts_kept(), logging_redirect_tqdm(loggers=[logging.getLogger("autoprune")]):
            result = run_search(
                config, run_dir=run_dir, storage=args.storage, progress=not args.quiet
            )
            raise_if_interrupted()  # one swallowed after the last trial, in the test evaluation
    except KeyboardInterrupt:
        records = load_records(run_dir) if (run_dir / "run.json").exists() else []
        done = sum(
            r.state in ("complete", "pruned") or (r.state == "failed" and r.error != "interrupted")
            for r in records
        )
        if records:
            hypervolume = load_hypervolume(run_dir, records)
            write_report_files(
                run_dir, pareto_front(records), records, title=title, hypervolume=hypervolume
            )
        print(
            f"autoprune: interrupted; {done} finished trials are kept in {run_dir}. "
            f"Continue with: {command}",
            file=sys.stderr,
        )
        return 130
    hypervolume = load_hypervolume(run_dir, list(result.records))
    write_report_files(
        run_dir, list(result.front), list(result.records), title=title, hypervolume=hypervolume
    )
    print(format_front_table(result.front, result.records, hypervolume))
    print(
        f"\nrun directory: {run_dir} (pareto.json, pareto.csv, pareto.png, hypervolume.png); "
        f"continue or extend with: autoprune "
        f"{' '.join(shlex.quote(a) for a in _without_trials(args.argv))} --trials N"
    )
    return 0


def _without_trials(argv: list[str]) -> list[str]:
    """The command line minus ``--trials N``, to print "continue with: ... --trials N"."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--trials":
            skip = True
        elif not arg.startswith("--trials="):
            out.append(arg)
    return out


def _report(args: argparse.Namespace) -> int:
    from autoprune.report import (
        format_front_table,
        front_records,
        hypervolume_payload,
        summary,
    )
    from autoprune.search import load_hypervolume, load_records, pareto_front

    records = load_records(args.run_dir)
    front = pareto_front(records)
    hypervolume = load_hypervolume(args.run_dir, records)
    if args.format == "json":
        payload: dict[str, Any] = {"summary": summary(records), "pareto": front_records(front)}
        if hypervolume is not None:
            payload["hypervolume"] = hypervolume_payload(hypervolume)
        print(json.dumps(payload, indent=2))
    else:
        print(format_front_table(front, records, hypervolume))
    return 0


def _export(args: argparse.Namespace) -> int:
    from autoprune._interrupts import interrupts_kept
    from autoprune.export import export_run
    from autoprune.retrain import RetrainSettings

    options = {
        "evaluator": args.retrain_evaluator,
        "epochs": args.retrain_epochs,
        "samples": args.retrain_samples,
        "seed": args.retrain_seed,
    }
    given = [f"--retrain-{name}" for name, value in options.items() if value is not None]
    if given and not args.retrain:
        raise ConfigError(f"{given[0]} applies only with --retrain; add --retrain")
    retrain = None
    if args.retrain:
        retrain = RetrainSettings(**{k: v for k, v in options.items() if v is not None})
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    try:
        with interrupts_kept():
            exported = export_run(
                args.run_dir,
                trials=args.trial or (),
                pareto=args.pareto,
                formats=formats,
                out_dir=args.out,
                retrain=retrain,
                progress=not args.quiet,
            )
    except KeyboardInterrupt:
        if retrain is None:
            raise
        print(
            f"autoprune: interrupted; retrained trials are kept in {args.run_dir / 'retrain'}. "
            f"Continue with: autoprune {' '.join(shlex.quote(a) for a in args.argv)}",
            file=sys.stderr,
        )
        return 130
    for item in exported:
        print(f"trial {item.trial}: {item.folder} ({', '.join(p.name for p in item.files)})")
    return 0


def _targets(args: argparse.Namespace) -> int:
    from autoprune.hwprofiles import list_profiles

    profiles = list_profiles()
    if args.format == "json":
        print(json.dumps([p.to_dict() for p in profiles], indent=2, default=str))
        return 0
    rows = [
        (
            "name",
            "aliases",
            "kind",
            "fp32 GMAC/s",
            "fp16 GMAC/s",
            "int8 GMAC/s",
            "GB/s",
            "native",
            "multiple",
            "TVM target",
        )
    ]
    for p in profiles:
        peak = p.peak_macs_per_s
        rows.append(
            (
                p.name,
                ",".join(p.aliases) or "-",
                p.kind,
                *(f"{peak[k] / 1e9:.0f}" if k in peak else "-" for k in ("fp32", "fp16", "int8")),
                f"{p.memory_bandwidth_bytes_per_s / 1e9:.1f}",
                ",".join(p.native_precisions),
                str(p.channel_multiple),
                _target_text(p.tvm_target_spec()),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _target_text(spec: str | dict[str, Any]) -> str:
    """A TVM target in one short cell: the tag, or the dict's kind and architecture."""
    if isinstance(spec, str):
        return spec
    detail = spec.get("arch") or spec.get("mcpu") or spec.get("mtriple") or ""
    return f"{spec['kind']} {detail}".strip()


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--input {text!r} is not CxHxW; write e.g. 3x224x224")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def _measure(
    model: Any, shape: tuple[int, int, int], device: Any, args: argparse.Namespace
) -> list[Any]:
    """Latency measurements of ``model`` for ``profile --measure``."""
    from autoprune.hwprofiles import (
        RpcEndpoint,
        TuningError,
        is_local_target,
        measure_pytorch_latency,
        measure_rpc_latency,
        measure_tvm_latency,
        tune_model,
    )

    if args.rpc_tracker or args.rpc_key:
        endpoint = RpcEndpoint.parse(args.rpc_tracker or "", key=args.rpc_key or "")
        return [measure_rpc_latency(model, shape, device, endpoint)]
    if not is_local_target(device.tvm_target_spec()):
        raise ConfigError(
            f"target {device.name} does not run on this machine: measure it on the "
            f"board with --rpc-tracker HOST:PORT --rpc-key KEY, or drop --measure"
        )
    torch_run = measure_pytorch_latency(model, shape)  # before TVM's threads exist
    database = None
    if args.tuning_trials < 0:
        raise ConfigError(f"--tuning-trials must be >= 0, but got {args.tuning_trials}")
    if args.tuning_trials > 0:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        database = args.tuning_dir or cache / "autoprune" / "tuning" / device.name
        try:
            report = tune_model(
                model,
                shape,
                device,
                database_dir=database,
                max_trials=args.tuning_trials * 1000,
                trials_per_task=args.tuning_trials,
                timeout_s=3600.0,
            )
        except TuningError as exc:  # time what there is; the record says untuned kernels stay
            print(f"autoprune: {exc}", file=sys.stderr)
            report = None
        if report is not None:
            print(
                f"autoprune: tuned {report.new_tasks} of {report.tasks} kernels "
                f"({report.trials} trials, {report.seconds:.0f} s) into {database}",
                file=sys.stderr,
            )
    return [measure_tvm_latency(model, shape, device, database_dir=database), torch_run]


def _profile(args: argparse.Namespace) -> int:
    from autoprune.hwprofiles import load_profile
    from autoprune.search import model_costs
    from autoprune.spaces import create_model

    shape = _parse_shape(args.input)
    device = load_profile(args.target)
    model = create_model(args.model, num_classes=args.num_classes, in_channels=shape[0]).eval()
    record = {
        "model": args.model,
        "target": device.name,
        "input_shape": "x".join(map(str, shape)),
        **model_costs(model, shape, device),
    }
    if args.measure or args.rpc_tracker:
        record["measured"] = [m.to_dict() for m in _measure(model, shape, device, args)]
    if args.format == "json":
        print(json.dumps(record, indent=2))
        return 0
    print(f"{args.model} at {record['input_shape']} on {device.name}")
    print(f"  MACs      {record['macs'] / 1e9:.4f} G (GFLOPs = multiply-accumulates)")
    print(f"  params    {record['params']:,}")
    print(f"  size      {record['size_bytes'] / 1e6:.3f} MB")
    print(
        f"  latency   {record['latency_ms']:.4g} ms "
        f"({record['latency_source']}: {record['hardware_method']})"
    )
    print(f"  energy    {record['energy_mj']:.4g} mJ per inference ({record['energy_source']})")
    for m in record.get("measured", []):
        tuning = "" if m["backend"] == "pytorch" else ", tuned" if m["tuned"] else ", untuned"
        label = f"{m['backend']}{tuning}"
        if m["error"]:
            print(f"  latency   measurement failed ({label}): {m['error']}")
        else:
            print(
                f"  latency   {m['latency_ms']:.4g} ms +- {m['spread_ms'] / 2:.2g} "
                f"(measured, {label}, median of {len(m['runs_ms'])} repeats, "
                f"{m['protocol']['threads']} threads)"
            )
    return 0


_COMMANDS = {
    "search": _search,
    "report": _report,
    "export": _export,
    "targets": _targets,
    "profile": _profile,
    "board": _board,
}


def _attach_dash_values(argv: list[str]) -> list[str]:
    """``--budget -1ms`` -> ``--budget=-1ms``, so that the budget parser, not argparse, explains
    what is wrong with a value that starts with a dash."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] in ("--budget", "--set") and arg.startswith("-") and out:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autoprune`` console script; returns the exit status."""
    argv = _attach_dash_values(list(sys.argv[1:] if argv is None else argv))
    search_help = bool(argv) and argv[0] == "search" and ("-h" in argv or "--help" in argv)
    args = _parser(list_controllers=search_help).parse_args(argv)
    args.argv = argv
    _configure_logging(getattr(args, "quiet", False))
    try:
        return _COMMANDS[args.command](args)
    except AutopruneError as exc:
        if args.debug:
            raise
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
