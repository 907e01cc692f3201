"""The ``autoprune`` argument parser: every subcommand's options, typed where argparse can.

Options that set config values map to dotted config keys in :data:`SEARCH_VALUES`; the values
reach the config as they are (``load_config(values=...)``), never as text to parse again.
Names that live in registries (controllers, evaluators, data sets) are listed in ``search
--help`` from the registries themselves; importing them costs seconds, so only that help does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from autoprune import __version__
from autoprune.config import DEFAULT_CONFIG, list_configs
from autoprune.errors import ConfigError

__all__ = ["SEARCH_VALUES", "build_parser", "check_folder", "check_path", "input_shape"]

#: ``search`` option (argparse dest) -> the config key it sets.
SEARCH_VALUES = {
    "target": "target",
    "budget": "budgets",
    "controller": "search.controller",
    "evaluator": "evaluator.name",
    "trials": "search.trials",
    "timeout": "search.timeout_s",
    "seed": "search.seed",
    "rpc_tracker": "hardware.rpc_tracker",
    "rpc_key": "hardware.rpc_key",
    "ray_address": "search.ray_address",
    "workers": "search.workers",
    "cpus_per_trial": "search.cpus_per_trial",
    "gpus_per_trial": "search.gpus_per_trial",
}

_BUDGET_HELP = (
    "hard budget <number><unit>, repeatable (all apply; replaces the config's budgets). "
    "Units: gflops|mflops (multiply-accumulates: ResNet-50 at 224x224 = 4.09 GFLOPs), ms|us "
    "(latency on the target), mj|uj (energy per inference), mb|kb (model size at its "
    "bit-widths), mparams|kparams"
)


def input_shape(text: str) -> tuple[int, int, int]:
    """``"3x224x224"`` -> ``(3, 224, 224)``; the argparse type of ``profile --input``."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--input {text!r} is not CxHxW; write e.g. 3x224x224")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def check_folder(option: str, path: Path | None) -> None:
    """Refuse a folder option that names an existing file (a missing folder is created)."""
    if path is not None and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a file; pass a folder (it is created)")


def check_path(what: str, path: Path) -> None:
    """Refuse a path the system cannot look at (a name too long, a folder without permission),
    or that is not UTF-8 (the run's files quote it); a missing one is left to the command,
    which says what it expected there."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} {str(path)!r:.200} is not UTF-8 text; rename it") from None
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte, not from a shell
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise ConfigError(f"{what} {str(path)!r:.200} cannot be used: {why}") from None


def _registry_help(listed: bool) -> dict[str, str]:
    """Help of the options whose values live in registries; with ``listed`` (``search
    --help``), every registered name and what it is."""
    if not listed:
        return {
            "controller": "search controller (`autoprune search --help` lists them; default nsga2)",
            "evaluator": "how candidates are trained (`autoprune search --help` lists them; "
            "default scratch-e)",
            "set": "override a config value, e.g. --set training.epochs=3 (repeatable)",
        }
    from autoprune.evaluators import describe_evaluator, list_datasets, list_evaluators
    from autoprune.search import describe_controller, list_controllers

    def listing(names: list[str], describe: object) -> str:
        return "; ".join(f"{n}: {describe(n).rstrip('.')}" for n in names)  # type: ignore[operator]

    return {
        "controller": "search controller (default nsga2): "
        + listing(list_controllers(), describe_controller),
        "evaluator": "how candidates are trained (default scratch-e; settings under "
        "evaluator.NAME in the config): " + listing(list_evaluators(), describe_evaluator),
        "set": "override a config value, e.g. --set training.epochs=3 (repeatable); data sets "
        f"for --set data.dataset=NAME: {', '.join(list_datasets())} (data.root: where the "
        "files are; data.download=true lets cifar10/cifar100 fetch them)",
    }


def _add_search(sub: argparse._SubParsersAction, listed: bool) -> None:
    helps = _registry_help(listed)
    search = sub.add_parser(
        "search",
        help="search compressed architectures under budgets",
        description="Search widths, depth, resolution and bit-widths of a "
        "base CNN for a target device under hard budgets; resumable.",
    )
    search.add_argument(
        "--config",
        default=None,
        metavar="PATH|NAME",
        help=f"YAML config, or the name of a shipped one ({', '.join(list_configs())}); "
        f"default: the embedded default, {DEFAULT_CONFIG}",
    )
    search.add_argument(
        "--target", help="device profile name or YAML path (see `autoprune targets`)"
    )
    search.add_argument(
        "--budget", action="append", default=None, metavar="SPEC", help=_BUDGET_HELP
    )
    search.add_argument("--controller", help=helps["controller"])
    search.add_argument("--evaluator", help=helps["evaluator"])
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
        help=helps["set"],
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
        help="run the trials on this Ray cluster (its head's HOST:PORT, or auto, run on a "
        "node of it); the run directory stays on this node, workers reach it through Ray",
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


def _add_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="export trained trials (weights, ONNX, TorchScript, .pt2, TVM)",
        description="Export trained trials for deployment. Exit status 0: everything asked for "
        "was written; 3: some (trial, format) pairs were skipped (each named on stderr with "
        "the reason), the rest written; 2: bad input, nothing written.",
    )
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, action="append", help="trial number (repeatable)")
    which.add_argument("--pareto", action="store_true", help="every Pareto-front member")
    export.add_argument(
        "--format",
        default="onnx,torchscript,pt2",  # autoprune.export.DEFAULT_FORMATS (not imported here)
        help="comma-separated formats: onnx (dynamic batch; a quantized trial as an integer QDQ "
        "model plus model.float.onnx), torchscript, pt2 (torch.export), tvm (a library for the "
        "target, batch 1) (default: onnx,torchscript,pt2)",
    )
    export.add_argument(
        "--target",
        metavar="NAME",
        help="device profile to build for (TVM library; 16-bit layers as fp16 where native), "
        "e.g. host to run the library here (default: the run's target)",
    )
    export.add_argument(
        "--fold-normalisation",
        action="store_true",
        help="put the input normalisation into the graphs: the models take pixel values in 0..255",
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
        help="how to retrain: scratch-b (default: the base model's training compute), or "
        "another evaluator that trains (scratch-e, finetune, distill, ...)",
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


def _add_profile(sub: argparse._SubParsersAction) -> None:
    profile = sub.add_parser("profile", help="costs of one model on one device")
    profile.add_argument("--target", required=True, help="device profile name or YAML path")
    profile.add_argument("--model", required=True, help="model name (resnet18, resnet50, ...)")
    profile.add_argument(
        "--input",
        type=input_shape,
        default=(3, 224, 224),
        metavar="CxHxW",
        help="input shape (default 3x224x224)",
    )
    profile.add_argument(
        "--num-classes", type=int, default=1000, help="classifier outputs (default 1000)"
    )
    profile.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="precision the model runs at (default fp32); one the target lacks runs at the "
        "narrowest native precision that covers it",
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


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    calibrate = sub.add_parser(
        "calibrate", help="fit a device profile's factors to published measurements of its board"
    )
    calibrate.add_argument("--target", required=True, help="device profile name or YAML path")
    calibrate.add_argument(
        "--rows", type=Path, metavar="CSV", help="calibration rows (default: the built-in set)"
    )
    calibrate.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
    calibrate.add_argument(
        "--no-cross-validation",
        action="store_true",
        help="skip leave-one-model-out cross-validation (no expected error is written)",
    )
    calibrate.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="kernel lists of the rows' models (default ~/.cache/autoprune/kernels)",
    )
    calibrate.add_argument("--format", choices=("table", "json"), default="table")
    calibrate.add_argument("--quiet", action="store_true", help="no progress lines")


class _OneLineErrors(argparse.ArgumentParser):
    """argparse with its errors in one line, naming where help is, without the usage block
    (subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser(*, list_registries: bool = False) -> argparse.ArgumentParser:
    """The parser of every subcommand; ``list_registries`` lists registered names in the help
    of ``search`` (slow: it imports the search and evaluator packages)."""
    parser = _OneLineErrors(
        prog="autoprune",
        description="Hardware-aware AutoML search for CNN compression. "
        "FLOPs = multiply-accumulates.",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_search(sub, list_registries)

    report = sub.add_parser("report", help="print the Pareto front of a run")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument("--format", choices=("table", "json"), default="table")

    _add_export(sub)

    targets = sub.add_parser("targets", help="list device profiles")
    targets.add_argument("--format", choices=("table", "json"), default="table")

    _add_profile(sub)
    _add_calibrate(sub)

    board = sub.add_parser(
        "board",
        help="run ON a board: a TVM RPC server that also reports the board's power rails",
    )
    board.add_argument("--rpc-tracker", required=True, metavar="HOST:PORT", help="TVM tracker")
    board.add_argument("--rpc-key", required=True, metavar="KEY", help="key to register under")
    board.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface: TVM RPC "
        "has no authentication, so only on a trusted network)",
    )
    board.add_argument("--port", type=int, default=9090, help="first port to try (9090)")
    return parser
