"""MetaSchedule tuning into a shared database: real torch.export, real TVM, real worker processes.

One tiny tuning run (a 2-conv net at 1x8x8, 2 trials: one for each of its two kernels) is
shared by the module (its tests are marked slow) and copied where a test writes to it; the reuse
checks run with ``max_trials=0`` or on fully tuned workloads, so they start a worker but tune
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles import (
    MeasureProtocol,
    TuningError,
    TuningReport,
    build_tuned,
    check_outputs_match,
    import_to_relax,
    load_profile,
    measure_tvm_latency,
    tune_model,
)
from autoprune.hwprofiles._cache import cache_path
from autoprune.hwprofiles._database import RECORDS_NAME, WORKLOADS_NAME, record_count

SHAPE = (1, 8, 8)
QUICK = MeasureProtocol(warmup=1, number=2, repeat=3, min_repeat_ms=5.0, threads=1)


def _two_conv(second_out: int = 8, *, seed: int = 0) -> nn.Module:
    # nn.Sequential of torch layers: picklable by reference for the spawn worker.
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),  # decomposed and fused into the conv's epilogue before tuning
        nn.ReLU(),
        nn.Conv2d(8, second_out, 3, padding=1),
    )
    with torch.no_grad():  # running statistics that are not the identity
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _copy_database(source: Path, folder: Path) -> Path:
    """A copy of the database in ``source``, for a test that writes to it."""
    folder.mkdir()
    for name in (WORKLOADS_NAME, RECORDS_NAME):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TuningReport]:
    """Read only: a test that tunes into it works on a copy (:func:`_copy_database`)."""
    database = tmp_path_factory.mktemp("tuning")
    # 2 trials for the 2 new tasks: one round of one trial each (MetaSchedule's task scheduler
    # visits every task once first); a record for each kernel is all that the tests below need.
    report = tune_model(
        _two_conv(), SHAPE, "host", database_dir=database, max_trials=2, threads=1, timeout_s=300
    )
    return database, report


@pytest.mark.slow  # the shared tuning run
def test_tuning_writes_records_to_the_database(tuned_db: tuple[Path, TuningReport]) -> None:
    database, report = tuned_db
    # conv+bias+bn+relu and conv+bias: two fused workloads, both new in an empty database
    assert report.tasks == 2
    assert report.new_tasks == 2 and report.reused_tasks == 0
    assert report.trials > 0
    assert record_count(database) == report.trials
    assert (database / WORKLOADS_NAME).is_file() and (database / RECORDS_NAME).is_file()
    assert report.database_dir == str(database.resolve())
    assert report.seconds > 0


@pytest.mark.slow  # the shared tuning run
def test_the_same_workloads_are_reused_not_tuned_again(
    tuned_db: tuple[Path, TuningReport],
) -> None:
    database, first = tuned_db
    before = record_count(database)
    # other weights, same shapes: the same workloads
    again = tune_model(
        _two_conv(seed=1), SHAPE, "host", database_dir=database, max_trials=8, threads=1
    )
    assert (again.tasks, again.new_tasks, again.trials) == (first.tasks, 0, 0)
    assert record_count(database) == before


@pytest.mark.slow  # the shared tuning run
def test_a_model_sharing_one_conv_needs_only_the_other(
    tuned_db: tuple[Path, TuningReport],
) -> None:
    database, _ = tuned_db
    # the first conv (1->8, bn, relu) is already tuned; the second (8->16) is a new workload.
    # max_trials=0 counts without tuning.
    report = tune_model(
        _two_conv(16), SHAPE, "host", database_dir=database, max_trials=0, threads=1
    )
    assert (report.tasks, report.new_tasks, report.trials) == (2, 1, 0)


@pytest.mark.slow  # the shared tuning run
def test_tuned_build_matches_pytorch(tuned_db: tuple[Path, TuningReport]) -> None:
    database, _ = tuned_db
    # tolerance: |tvm - torch| <= 1e-4 + 1e-4 * |torch| elementwise (fp32, 72-term dot products)
    max_abs = check_outputs_match(
        _two_conv(), SHAPE, "host", rtol=1e-4, atol=1e-4, database_dir=database
    )
    assert max_abs < 1e-4


@pytest.mark.slow  # the shared tuning run
def test_tuned_latency_is_labelled_and_cached_apart_from_untuned(
    tuned_db: tuple[Path, TuningReport], tmp_path: Path
) -> None:
    database, _ = tuned_db
    tuned = measure_tvm_latency(
        _two_conv(), SHAPE, "host", protocol=QUICK, cache_dir=tmp_path, database_dir=database
    )
    assert tuned.ok, tuned.error
    assert tuned.tuned and tuned.backend == "tvm" and tuned.latency_ms > 0
    assert len(tuned.runs_ms) == QUICK.repeat
    (cached,) = tmp_path.glob("tvm-*.json")
    key = json.loads(cached.read_text())["key"]
    assert key["tuned"] is True
    assert key["database"] == {"dir": str(database.resolve()), "records": record_count(database)}
    assert cache_path(tmp_path, key) == cached
    # a second call is a cache hit: the same record, no worker
    again = measure_tvm_latency(
        _two_conv(), SHAPE, "host", protocol=QUICK, cache_dir=tmp_path, database_dir=database
    )
    assert again == tuned


def test_report_round_trips_through_json() -> None:
    report = TuningReport(tasks=5, new_tasks=2, trials=16, seconds=31.5, database_dir="/r/db")
    assert TuningReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    assert report.reused_tasks == 3
    with pytest.raises(ConfigError, match="unknown tuning report key"):
        TuningReport.from_dict({**report.to_dict(), "trails": 3})


def test_bad_arguments_are_refused_before_any_work(tmp_path: Path) -> None:
    net = _two_conv()
    with pytest.raises(ConfigError, match="does not run on this"):
        tune_model(net, SHAPE, "jetson", database_dir=tmp_path, max_trials=8)
    with pytest.raises(ConfigError, match="`max_trials` must be an integer >= 0"):
        tune_model(net, SHAPE, "host", database_dir=tmp_path, max_trials=-1)
    with pytest.raises(ConfigError, match="`trials_per_task` must be an integer >= 1"):
        tune_model(net, SHAPE, "host", database_dir=tmp_path, max_trials=8, trials_per_task=0)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(ConfigError, match="must be a folder"):
        tune_model(net, SHAPE, "host", database_dir=not_a_folder, max_trials=8)
    with pytest.raises(ConfigError, match="holds no MetaSchedule database"):
        measure_tvm_latency(net, SHAPE, "host", protocol=QUICK, database_dir=tmp_path)
    with pytest.raises(ConfigError, match="holds no MetaSchedule database"):
        build_tuned(None, {"kind": "llvm"}, tmp_path)  # type: ignore[arg-type]


def test_a_worker_that_runs_out_of_time_raises_tuning_error(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match="timeout"):
        tune_model(_two_conv(), SHAPE, "host", database_dir=tmp_path, max_trials=8, timeout_s=0.5)


@pytest.mark.slow  # the shared tuning run (a record for each task) and a second one
def test_a_larger_trials_per_task_tunes_tuned_kernels_further(
    tuned_db: tuple[Path, TuningReport], tmp_path: Path
) -> None:
    source, first = tuned_db
    assert (first.new_tasks, first.trials) == (2, 2)  # one trial for each of the two tasks
    database = _copy_database(source, tmp_path / "db")
    more = tune_model(
        _two_conv(),
        SHAPE,
        "host",
        database_dir=database,
        max_trials=100,
        trials_per_task=3,
        threads=1,
    )
    assert more.new_tasks == 2 and 0 < more.trials <= 4  # at most the 2 + 2 they lack
    assert record_count(database) == first.trials + more.trials


@pytest.mark.slow  # loads the database a few times (seconds each)
def test_a_record_tvm_cannot_load_is_set_aside_and_the_build_goes_on(
    tuned_db: tuple[Path, TuningReport], tmp_path: Path
) -> None:
    # TVM 0.27 has written records it then cannot parse, which made the whole database
    # unloadable; here one record's trace names an instruction TVM does not know.
    source, _ = tuned_db
    database = _copy_database(source, tmp_path / "db")
    lines = (database / RECORDS_NAME).read_text().splitlines(keepends=True)
    broken = lines[1].replace('"GetSBlock"', '"NoSuchScheduleInstruction"', 1)
    assert broken != lines[1]
    (database / RECORDS_NAME).write_text("".join([lines[0], broken, *lines[1:]]))

    net = _two_conv()
    target = load_profile("host").tvm_target_spec()
    executable = build_tuned(import_to_relax(net, SHAPE), target, database)  # repairs, builds
    assert executable is not None
    kept = (database / RECORDS_NAME).read_text().splitlines(keepends=True)
    assert kept == lines
    assert (database / "database_tuning_record.rejected.json").read_text() == broken
    assert not (database / "autoprune-scratch").exists()
