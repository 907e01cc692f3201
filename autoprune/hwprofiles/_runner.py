"""One interface for measured latency: :class:`LatencyRunner`, a template over worker processes.

The three runners (:class:`~autoprune.hwprofiles.PyTorchRunner`, PyTorch eager here;
:class:`~autoprune.hwprofiles.TvmRunner`, TVM-built code here; :class:`~autoprune.hwprofiles.
RpcRunner`, TVM-built code on a board behind a tracker) share :meth:`LatencyRunner.measure` and
differ only in the hooks it calls. :func:`~autoprune.hwprofiles.create_latency_runner` picks the
runner for a profile.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from autoprune.hwprofiles._cache import cache_load, cache_store
from autoprune.hwprofiles._power import EnergyMeasurement
from autoprune.hwprofiles._records import (
    LatencyMeasurement,
    MeasureProtocol,
    check_input_shape,
    default_threads,
    failed,
    from_runs,
    warn_if_noisy,
)
from autoprune.hwprofiles._tune import TuningReport
from autoprune.hwprofiles._workers import DEFAULT_TIMEOUT_S, ModelLike, run_in_worker

__all__ = ["LatencyRunner"]

_logger = logging.getLogger("autoprune.hwprofiles.measure")


class LatencyRunner(abc.ABC):
    """Measures the batch-1 latency of models on one target, in a kept worker process.

    A runner is made once per target and run (its protocol, cache folder and time limit fixed),
    then used per model in this order:

    1. :meth:`prepare` (optional; once per architecture, before its first :meth:`measure`):
       work the target needs before its timings mean something. :class:`TvmRunner` tunes the
       model's new kernels with MetaSchedule there; the others do nothing and return ``None``.
    2. :meth:`measure`: the same template for every runner: validate the shape, pick the
       protocol, build the cache key (:meth:`cache_key`; a hit is returned at once, no worker
       runs), build the payload (:meth:`payload`), run :attr:`job` on it in the kept worker
       :attr:`worker` with a time limit, turn a failure into a record with ``error`` set and an
       answer into a record (:meth:`record`), warn when the repeats are noisy, store the record
       in the cache.

    A subclass provides only what differs: :attr:`backend`, :attr:`job`, :meth:`cache_key`,
    :meth:`payload`, :meth:`failure_target`, :meth:`describe`, and where needed
    :meth:`default_protocol`, :attr:`tuned`, :attr:`profile_name`, :meth:`measured_target`
    (or all of :meth:`record`) and :meth:`prepare`.

    Args:
        protocol: the timing protocol; ``None``: :meth:`default_protocol` at each measurement.
        cache_dir: folder of the latency cache (e.g. ``<run_dir>/hw-cache``); ``None``: none.
        timeout_s: wall-clock limit of one worker (start, imports, build, timing), seconds.
    """

    #: ``LatencyMeasurement.backend`` of this runner's records.
    backend: ClassVar[Literal["tvm", "pytorch"]]

    def __init__(
        self,
        *,
        protocol: MeasureProtocol | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.protocol = protocol
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s

    # ------------------------------------------------------------------------ the interface

    def prepare(self, model: ModelLike, input_shape: tuple[int, int, int]) -> TuningReport | None:
        """Get the target ready to time ``model``; ``None`` when there is nothing to do.

        The default does nothing. :class:`TvmRunner` tunes the model's new kernels here.

        Raises:
            TuningError: tuning failed (exception, crash or timeout in its worker).
        """
        del model, input_shape
        return None

    def measure(self, model: ModelLike, input_shape: tuple[int, int, int]) -> LatencyMeasurement:
        """Batch-1 latency of ``model`` at ``input_shape`` (``(C, H, W)``, pixels), in ms.

        A failure in the worker (an op the compiler rejects, a crash, a timeout, a board that
        does not answer) comes back as a record with ``error`` set, never as an exception.
        Successful records are cached under :meth:`cache_key`; error records are not.

        Args:
            model: an ``nn.Module`` (picklable: module-level classes) or a
                :class:`~autoprune.spaces.Candidate` (built with ``build_model(candidate,
                seed=0)`` in the worker).
            input_shape: ``(C, H, W)`` of one input, pixels.

        Raises:
            ConfigError: a bad shape or model, or a setting of the runner that cannot work
                (e.g. a tuning folder without a database).
        """
        shape = check_input_shape(input_shape)
        protocol = self.protocol or self.default_protocol()
        fields = self.fields(shape, protocol)
        key = self.cache_key(model, shape, protocol)
        cached = cache_load(self.cache_dir, key)
        if cached is not None:
            return cached
        payload = self.payload(model, shape, protocol)
        _logger.info("measuring %s with %s", key["model"], self.describe())
        ok, answer = run_in_worker(
            self.job, payload, threads=protocol.threads, timeout_s=self.timeout_s, keep=self.worker
        )
        if not ok:
            _logger.warning("latency measurement with %s failed: %s", self.describe(), answer)
            return failed(answer, target=self.failure_target(), **fields)
        measurement = self.record(answer, fields)
        warn_if_noisy(measurement)
        cache_store(self.cache_dir, key, measurement)
        return measurement

    # ------------------------------------------------------------------------ the hooks

    #: The worker's body: a module-level function (pickled by reference) that takes
    #: :meth:`payload` and returns ``{"runs_ms": [ms per repeat], "target": str,
    #: "energy": EnergyMeasurement dict or None}``. Subclasses set ``job = staticmethod(f)``.
    job: ClassVar[Callable[[Any], Mapping[str, Any]]]

    #: The kept worker process :attr:`job` runs in (``run_in_worker``'s ``keep``): runners
    #: whose jobs import the same libraries share one; PyTorch is timed in its own.
    worker: ClassVar[str] = "tvm"

    @abc.abstractmethod
    def cache_key(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        """JSON-ready key naming everything the latency depends on; ``key["backend"]`` and
        ``key["model"]`` (the fingerprint) are required (file name and log line)."""

    @abc.abstractmethod
    def payload(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        """What :attr:`job` needs, picklable (no live TVM objects)."""

    @abc.abstractmethod
    def failure_target(self) -> str:
        """The ``target`` of an error record (nothing was built, so the spec as configured)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Short name of the runner and its target for log lines (``"TVM on host"``)."""

    def default_protocol(self) -> MeasureProtocol:
        """The protocol when none was given; subclasses choose the thread count."""
        return MeasureProtocol(threads=default_threads())

    @property
    def tuned(self) -> bool:
        """Whether records of this runner are of MetaSchedule-tuned kernels."""
        return False

    @property
    def profile_name(self) -> str | None:
        """``LatencyMeasurement.profile`` of this runner's records (``None``: this host)."""
        return None

    def fields(self, shape: tuple[int, int, int], protocol: MeasureProtocol) -> dict[str, Any]:
        """Record fields shared by success and error records (all but the latency and target)."""
        return {
            "protocol": protocol,
            "backend": self.backend,
            "tuned": self.tuned,
            "profile": self.profile_name,
            "input_shape": shape,
        }

    def measured_target(self, answer: Mapping[str, Any]) -> str:
        """The ``target`` of a successful record: the one the worker built for."""
        return str(answer["target"])

    def record(self, answer: Mapping[str, Any], fields: dict[str, Any]) -> LatencyMeasurement:
        """The successful record of the worker's ``answer`` (median and spread of the runs)."""
        energy = answer.get("energy")
        return from_runs(
            answer["runs_ms"],
            target=self.measured_target(answer),
            energy=EnergyMeasurement.from_dict(energy) if energy else None,
            **fields,
        )
