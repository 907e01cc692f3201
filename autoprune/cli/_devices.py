"""``autoprune targets``, ``profile`` and ``board``: devices, a model's costs, serving a board."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from torch import nn

from autoprune.cli._parser import check_folder
from autoprune.config import config_from_dict
from autoprune.hwprofiles import (
    LatencyMeasurement,
    PyTorchRunner,
    RpcEndpoint,
    TuningError,
    default_tuning_dir,
    exposure_note,
    find_board_sensor,
    latency_label,
    list_profiles,
    model_costs,
    serve_board,
)
from autoprune.search import RunParts, assemble
from autoprune.spaces import create_model

__all__ = ["board_command", "profile_command", "targets_command"]


def targets_command(args: argparse.Namespace) -> int:
    """List the device profiles (table or JSON)."""
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
            "runtime",
            "error",
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
                p.runtime,
                "-" if p.expected_error is None else f"+-{p.expected_error * 100:.0f} %",
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


def profile_command(args: argparse.Namespace) -> int:
    """Print one model's exact costs and estimated latency and energy on a target; with
    ``--measure``, beside latencies measured on this host or on the board."""
    shape = args.input
    check_folder("--tuning-dir", args.tuning_dir)
    config = config_from_dict(
        {
            "model": {"name": args.model, "num_classes": args.num_classes, "in_channels": shape[0]},
            "data": {"input_shape": list(shape)},
            "target": args.target,
            "hardware": {
                "rpc_tracker": args.rpc_tracker,
                "rpc_key": args.rpc_key,
                "tuning_trials_per_task": args.tuning_trials,
                "measure_timeout_s": 3600.0,  # tuning a whole model at 224x224 takes long
            },
        }
    )
    parts = assemble(config, tuning_dir=args.tuning_dir or default_tuning_dir(args.target))
    device = parts.profile
    model = create_model(args.model, num_classes=args.num_classes, in_channels=shape[0]).eval()
    record: dict[str, Any] = {
        "model": args.model,
        "target": device.name,
        "input_shape": "x".join(map(str, shape)),
        **model_costs(model, shape, device, precision=args.precision),
    }
    if args.measure or args.rpc_tracker:
        record["measured"] = [m.to_dict() for m in _measurements(model, shape, parts)]
    if args.format == "json":
        print(json.dumps(record, indent=2))
        return 0
    print(f"{args.model} at {record['input_shape']} on {device.name}")
    print(f"  MACs      {record['macs'] / 1e9:.4f} G (GFLOPs = multiply-accumulates)")
    print(f"  params    {record['params']:,}")
    print(f"  size      {record['size_bytes'] / 1e6:.3f} MB")
    runs_at = record["precision"]
    if runs_at != args.precision:
        runs_at = (
            f"{runs_at}: {device.name} has no native {args.precision} "
            f"(native: {', '.join(device.native_precisions)})"
        )
    print(f"  precision {runs_at}")
    label = latency_label(record["latency_source"], record["latency_expected_error"])
    print(f"  latency   {record['latency_ms']:.4g} ms ({label}: {record['hardware_method']})")
    if record["latency_expected_error"] is None:
        print(f"            ({device.name} is not calibrated: its error is unknown)")
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


def _measurements(
    model: nn.Module, shape: tuple[int, int, int], parts: RunParts
) -> list[LatencyMeasurement]:
    """TVM-built code on the board, or tuned TVM code and PyTorch eager on this host."""
    runner = parts.coster.runner()  # refuses a target that cannot be reached from here
    if parts.coster.endpoint is not None:
        return [runner.measure(model, shape)]
    eager = PyTorchRunner().measure(model, shape)  # in a fresh process: TVM's threads aside
    try:
        report = runner.prepare(model, shape)
    except TuningError as exc:  # time what there is; the record says which kernels are tuned
        print(f"autoprune: {exc}", file=sys.stderr)
        report = None
    if report is not None:
        print(
            f"autoprune: tuned {report.new_tasks} of {report.tasks} kernels "
            f"({report.trials} trials, {report.seconds:.0f} s) into {report.database_dir}",
            file=sys.stderr,
        )
    return [runner.measure(model, shape), eager]


def board_command(args: argparse.Namespace) -> int:
    """Serve this board over TVM RPC, with its power rails; runs until Ctrl-C (130)."""
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
    print(f"autoprune: {exposure_note(args.host)}", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 130
    finally:
        server.terminate()  # type: ignore[attr-defined]
