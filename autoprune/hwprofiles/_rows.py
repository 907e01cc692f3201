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
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoprune.errors import ConfigError
from autoprune.hwprofiles._profile import PRECISION_BITS

if TYPE_CHECKING:
    from autoprune.hwprofiles._kernels import KernelCost

__all__ = ["CALIBRATION_DIR", "CalibrationRow", "kernels_for_rows", "load_rows"]

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
    def setup(self) -> str:
        """Who measured the row, and where: its source up to the commit or date (one file of one
        repository, or one page). Rows of one setup share versions, power mode and timing."""
        return self.source.split(" @")[0].split(", ")[0]

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


def kernels_for_rows(
    rows: Sequence[CalibrationRow],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[tuple[str, int, tuple[int, int]], list[KernelCost]]:
    """The fused TVM kernels of every distinct ``(model, classes, input)`` among ``rows``.

    Each model is built with random weights (``create_model``) and lowered through TVM
    (about 5-20 s at 224x224 on 2 cores); ``cache_dir`` keeps the lists between calls.

    Raises:
        UnknownNameError: a row names a model that cannot be built.
        ConfigError: a model cannot be lowered at its row's input (the message names the line).
    """
    from autoprune.hwprofiles._lowered import _cached_kernels
    from autoprune.spaces import create_model

    out: dict[tuple[str, int, tuple[int, int]], list[KernelCost]] = {}
    for row in rows:
        if row.workload in out:
            continue
        if progress is not None:
            progress(f"{row.model} at {row.input_hw[0]}x{row.input_hw[1]}")
        model = create_model(row.model, num_classes=row.classes, in_channels=3).eval()
        try:
            out[row.workload] = _cached_kernels(model, model, row.input_shape, cache_dir)
        except Exception as exc:  # noqa: BLE001 - any importer or lowering failure
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"cannot lower {row.model} at {row.input_hw[0]}x{row.input_hw[1]} through TVM "
                f"(line {row.line}: {reason[:200]}); remove its rows or give another input"
            ) from exc
    return out
