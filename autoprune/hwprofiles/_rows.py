"""The calibration set: published batch-1 latencies of named models on the profiled boards.

``autoprune/hwprofiles/calibration/rows.csv`` holds one row per published measurement, each with
its source (``github:OWNER/REPO PATH @COMMIT`` or a page and the date it was read) and how it was
measured. Columns:

``board`` (a profile name), ``model`` (a name :func:`~autoprune.spaces.create_model` builds:
torchvision or ``timm:NAME``), ``classes`` (classifier outputs), ``input`` (``HxW``, 3
channels), ``batch`` (1), ``precision`` (``fp32``/``fp16``/``int8``), ``runtime`` (``tensorrt``,
``ncnn``, ``pytorch``...), ``latency_ms``, ``power_w`` (empty unless published), ``source``,
``method``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from autoprune.errors import ConfigError
from autoprune.hwprofiles._profile import PRECISION_BITS

__all__ = ["CALIBRATION_DIR", "CalibrationRow", "load_rows"]

#: Folder of ``rows.csv`` and of the fitted overlays ``<profile>.yaml`` (package data).
CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"

_COLUMNS = (
    "board",
    "model",
    "classes",
    "input",
    "batch",
    "precision",
    "runtime",
    "latency_ms",
    "power_w",
    "source",
    "method",
)


@dataclass(frozen=True)
class CalibrationRow:
    """One published measurement: ``model`` at ``input_hw`` on ``board``, batch 1.

    Attributes:
        line: its line in the CSV file (the header is line 1), how a fit cites it.
        board: the profile name.
        model: the model name; ``classes`` its classifier outputs.
        input_hw: ``(H, W)`` in pixels; 3 input channels.
        precision: ``fp32``, ``fp16`` or ``int8``, as run.
        runtime: the runtime that ran it.
        latency_ms: published batch-1 latency, ms.
        power_w: published power of the same run, W; ``None`` when not published.
        source: where it was published; ``method``: how it was measured.
    """

    line: int
    board: str
    model: str
    classes: int
    input_hw: tuple[int, int]
    precision: str
    runtime: str
    latency_ms: float
    power_w: float | None
    source: str
    method: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(3, H, W)``: the shape the model is lowered at."""
        return (3, *self.input_hw)

    @property
    def workload(self) -> tuple[str, int, tuple[int, int]]:
        """``(model, classes, input_hw)``: rows that share it share one kernel list."""
        return (self.model, self.classes, self.input_hw)


def _fail(path: Path, line: int, message: str) -> ConfigError:
    return ConfigError(f"{path}, line {line}: {message}; fix the row")


def _parse(path: Path, line: int, raw: dict[str, str]) -> CalibrationRow:
    try:
        height, width = (int(v) for v in raw["input"].lower().split("x"))
        classes = int(raw["classes"])
        batch = int(raw["batch"])
        latency = float(raw["latency_ms"])
        power = float(raw["power_w"]) if raw["power_w"].strip() else None
    except (ValueError, AttributeError) as exc:
        raise _fail(path, line, f"a number or the HxW input does not parse ({exc})") from None
    if batch != 1:
        raise _fail(path, line, f"batch is {batch}; the set holds batch-1 latencies only")
    if raw["precision"] not in PRECISION_BITS:
        raise _fail(path, line, f"precision {raw['precision']!r} is not one of fp32, fp16, int8")
    if not (math.isfinite(latency) and latency > 0) or (power is not None and power <= 0):
        raise _fail(path, line, "latency_ms (and power_w, when given) must be > 0")
    if min(height, width, classes) < 1 or not raw["source"].strip():
        raise _fail(path, line, "input, classes and source must be given")
    return CalibrationRow(
        line=line,
        board=raw["board"].strip(),
        model=raw["model"].strip(),
        classes=classes,
        input_hw=(height, width),
        precision=raw["precision"],
        runtime=raw["runtime"].strip(),
        latency_ms=latency,
        power_w=power,
        source=raw["source"].strip(),
        method=raw["method"].strip(),
    )


def load_rows(
    path: str | Path | None = None, *, boards: Iterable[str] | None = None
) -> list[CalibrationRow]:
    """The calibration rows of ``path`` (default: the built-in ``rows.csv``), in file order.

    Args:
        path: a CSV file with the columns of the module docstring.
        boards: keep only the rows of these profile names.

    Raises:
        ConfigError: the file cannot be read, lacks a column, or a row is malformed (the message
            names the file and line).

    Example:
        >>> {r.board for r in load_rows(boards=["jetson-orin-nano"])}
        {'jetson-orin-nano'}
    """
    path = Path(path) if path is not None else CALIBRATION_DIR / "rows.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read calibration rows {str(path)!r} ({exc}); check the path"
        ) from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(
            f"{path}: missing column {missing[0]!r}; the header must be {','.join(_COLUMNS)}"
        )
    keep = None if boards is None else set(boards)
    rows = []
    for raw in reader:
        row = _parse(path, reader.line_num, raw)
        if keep is None or row.board in keep:
            rows.append(row)
    return rows
