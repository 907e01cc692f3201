"""Figures quoted in profiles, docs, the README and code match the results JSONs they cite.

Each test reads a file under ``benchmarks/results/`` and the text that quotes it, and checks the
quoted figures against the stored ones at the precision they are quoted with. No benchmark runs.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

from autoprune.evaluators._evaluate import CPU_AUTO_PRECISION, CPU_CHANNELS_LAST

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
HWPROFILES = ROOT / "autoprune" / "hwprofiles"


def _results(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def _text(path: str) -> str:
    """``path``'s text with lines joined (quotes wrap) and comment markers dropped."""
    lines = (ROOT / path).read_text().splitlines()
    return " ".join(re.sub(r"^\s*#\s?", "", line).strip() for line in lines)


def _quoted(text: str, pattern: str) -> tuple[float, ...]:
    """The numbers ``pattern``'s groups match in ``text`` (it must occur)."""
    match = re.search(pattern, text)
    assert match is not None, f"not quoted: {pattern!r}"
    return tuple(float(g) for g in match.groups())


def _agrees(quoted: float, value: float, decimals: int) -> bool:
    """Whether ``quoted`` is ``value`` rounded to ``decimals`` places (either way at a tie)."""
    return abs(quoted - value) <= 0.5 * 10**-decimals + 1e-9


def _errors(rows: list[dict[str, Any]], column: str) -> list[float]:
    return [100 * abs(r[column] - r["tvm_ms"]) / r["tvm_ms"] for r in rows]


def test_the_host_estimators_headline_is_its_cross_validated_error() -> None:
    """host.yaml and the README quote the cross-validated error (median, mean, worst) of
    latency_fidelity.json's rows, and name the in-sample fit's as such."""
    data = _results("latency_fidelity.json")
    rows = [r for r in data["rows"] if r["tvm_error"] is None]
    cv = _errors(rows, "cross_validated_per_kernel_ms")
    fit = _errors(rows, "fitted_per_kernel_ms")
    expected = (statistics.median(cv), statistics.mean(cv), max(cv), statistics.median(fit))
    for path, pattern in [
        (
            "autoprune/hwprofiles/profiles/host.yaml",
            r"5-fold cross-validated\): median ([\d.]+) %, mean ([\d.]+) %, worst ([\d.]+) %; "
            r"in-sample fit: median ([\d.]+) %",
        ),
        (
            "README.md",
            r"\(5-fold cross-validated\), median error ([\d.]+) %, mean ([\d.]+) %, worst "
            r"([\d.]+) %; the in-sample fit's median, ([\d.]+) %",
        ),
    ]:
        quoted = _quoted(_text(path), pattern)
        assert all(_agrees(q, e, 1) for q, e in zip(quoted, expected, strict=True)), path
    (models,) = _quoted(_text("README.md"), r"each of (\d+) models estimated with the host factors")
    assert models == len(rows) == data["models"]


def test_latency_fidelitys_summary_is_computed_from_its_rows() -> None:
    data = _results("latency_fidelity.json")
    rows = [r for r in data["rows"] if r["tvm_error"] is None]
    for key in ("estimated_per_kernel_ms", "fitted_per_kernel_ms", "cross_validated_per_kernel_ms"):
        errors, stored = _errors(rows, key), data["summary"][key]
        assert abs(stored["mape_percent"] - statistics.median(errors)) < 1e-9
        assert abs(stored["mean_ape_percent"] - statistics.mean(errors)) < 1e-9
        assert abs(stored["max_ape_percent"] - max(errors)) < 1e-9


def test_the_host_profiles_factors_are_the_fitted_ones() -> None:
    fitted = _results("latency_fidelity.json")["summary"]["fitted_factors"]
    profile = yaml.safe_load((HWPROFILES / "profiles" / "host.yaml").read_text())
    text = _text("autoprune/hwprofiles/profiles/host.yaml")
    for name, decimals in [
        ("compute_efficiency", 4),
        ("memory_efficiency", 4),
        ("kernel_launch_overhead_us", 3),
    ]:
        (quoted,) = _quoted(text, rf"{name}: [\d.]+ +# M: fitted \(([\d.]+)\)")
        assert _agrees(quoted, fitted[name], decimals), name
        assert abs(profile[name] - fitted[name]) / fitted[name] < 0.01, name


def test_tvm_docs_quote_tvm_smoke_and_tvm_tuning() -> None:
    smoke, tuning = _results("tvm_smoke.json"), _results("tvm_tuning.json")
    text = _text("docs/tvm.md")
    full, *smaller = smoke["rows"]
    untuned, eager, ratio = _quoted(
        text, r"ran in ([\d.]+) ms untuned against ([\d.]+) ms in PyTorch eager \((\d+)x\)"
    )
    assert _agrees(untuned, full["tvm_untuned_ms"], 1) and _agrees(eager, full["pytorch_ms"], 2)
    assert _agrees(ratio, full["tvm_over_pytorch"], 0)
    low, high = _quoted(text, r"smaller variants were (\d+)-(\d+)x slower")
    assert _agrees(low, min(r["tvm_over_pytorch"] for r in smaller), 0)
    assert _agrees(high, max(r["tvm_over_pytorch"] for r in smaller), 0)
    quoted = _quoted(
        text,
        r"tuned with (\d+) trials \((\d+) s\) ran in ([\d.]+) ms, with (\d+) trials \((\d+) s\) "
        r"in ([\d.]+) ms",
    )
    for (trials, seconds, ms), row in zip((quoted[:3], quoted[3:]), tuning["rows"], strict=True):
        assert trials == row["max_trials"] and _agrees(seconds, row["tuning"]["seconds"], 0)
        assert _agrees(ms, row["tvm_tuned_ms"], 2)
    (tasks,) = _quoted(text, r"found all of its (\d+) tasks in the database and tuned nothing")
    reuse = tuning["reuse_by_second_candidate"]
    assert tasks == reuse["tasks"] and reuse["new_tasks"] == reuse["trials"] == 0


def test_the_readme_quotes_ray_overhead() -> None:
    data = _results("ray_overhead.json")
    quoted = _quoted(
        _text("README.md"),
        r"the default run's (\d+) trials on this 2-core host\): ([\d.]+) s per trial \(median; "
        r"([\d.]+) % of a (\d+) s trial\) once a worker process runs, (\d+) s to start each "
        r"worker process, (\d+) s to start Ray; a 3-node loopback cluster ran (\d+) trials",
    )
    expected = [
        (data["trials_compared"], 0),
        (data["ray_overhead_seconds_per_trial"]["median_after_the_first"], 2),
        (100 * data["ray_overhead_share_of_trial_time"], 1),
        (data["local_trial_seconds_median"], 0),
        (data["worker_start_seconds"], 0),
        (data["ray_start_seconds"], 0),
        (data["cluster_trials_at_once"], 0),
    ]
    assert all(_agrees(q, e, d) for q, (e, d) in zip(quoted, expected, strict=True))


def test_the_readme_quotes_measure_workers() -> None:
    summary = _results("measure_workers.json")["summary"]
    quoted = _quoted(
        _text("README.md"),
        r"a candidate's TVM build and timing took ([\d.]+) s and its PyTorch timing ([\d.]+) s, "
        r"against ([\d.]+) s and ([\d.]+) s in a fresh process each",
    )
    expected = [
        (summary["tvm"]["kept_median_after_first_s"], 0),
        (summary["pytorch"]["kept_median_after_first_s"], 1),
        (summary["tvm"]["fresh_median_s"], 0),
        (summary["pytorch"]["fresh_median_s"], 0),
    ]
    assert all(_agrees(q, e, d) for q, (e, d) in zip(quoted, expected, strict=True))


def test_the_controllers_doc_tables_are_controllers_json() -> None:
    data = {r["problem"]: r["controllers"] for r in _results("controllers.json")["results"]}
    lines = (ROOT / "docs" / "controllers.md").read_text().splitlines()
    checked = 0
    for problem, controllers in data.items():
        start = lines.index(next(line for line in lines if line.startswith(f"| {problem} |")))
        header = [c.strip() for c in lines[start].strip("|").split("|")]
        for line in lines[start + 2 : start + 2 + len(controllers)]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            stored = controllers[cells[0]]
            for column, cell in zip(header[1:], cells[1:], strict=True):
                if column == "feasible":
                    assert _agrees(float(cell), stored["feasible_as_proposed"]["mean"], 2)
                else:
                    mean, std = (float(x) for x in cell.split("+-"))
                    figure = stored["hypervolume_fraction"][column.split()[0]]
                    assert _agrees(mean, figure["mean"], 3) and _agrees(std, figure["std"], 3)
                checked += 1
    assert checked == 42
    quoted = _quoted(
        _text("docs/controllers.md"),
        r"\(compression ([\d.]+) \+- ([\d.]+) against ([\d.]+) \+- ([\d.]+); DTLZ2 ([\d.]+) "
        r"against ([\d.]+)\)",
    )
    end = {
        p: {c: v["hypervolume_fraction"]["200"] for c, v in cs.items()} for p, cs in data.items()
    }
    expected = [
        end["compression"]["rl"]["mean"],
        end["compression"]["rl"]["std"],
        end["compression"]["random"]["mean"],
        end["compression"]["random"]["std"],
        end["dtlz2"]["rl"]["mean"],
        end["dtlz2"]["random"]["mean"],
    ]
    assert all(_agrees(q, e, 3) for q, e in zip(quoted, expected, strict=True))


def test_calibration_doc_and_overlays_match_board_fidelity() -> None:
    """docs/calibration.md's table, and each overlay's expected error and cross-validation,
    are board_fidelity.json's leave-one-model-out figures."""
    boards = {b["board"]: b for b in _results("board_fidelity.json")["boards"]}
    text = (ROOT / "docs" / "calibration.md").read_text()
    table = {}
    for line in text.split("### Results", 1)[1].split("\n\n")[2].splitlines()[2:]:
        cells = [c.strip().strip("*% ") for c in line.strip("|").split("|")]
        table[cells[0]] = [float(c) for c in cells[1:]]
    assert sorted(table) == sorted(boards)
    for name, board in boards.items():
        before, after = board["before"], board["leave_one_model_out"]
        expected = [
            (board["rows"], 0),
            (after["points"], 0),
            (board["models"], 0),
            (before["median_ape_percent"], 1),
            (before["kendall_tau"], 2),
            (after["median_ape_percent"], 1),
            (after["kendall_tau"], 2),
        ]
        assert all(_agrees(q, e, d) for q, (e, d) in zip(table[name], expected, strict=True))
        overlay = yaml.safe_load((HWPROFILES / "calibration" / f"{name}.yaml").read_text())
        assert overlay["expected_error"] == round(after["median_ape_percent"] / 100, 4), name
        cv = overlay["cross_validation"]
        assert cv["median_ape_percent"] == after["median_ape_percent"], name
        assert cv["kendall_tau"] == after["kendall_tau"] and cv["points"] == after["points"]
        for factor, value in board["fitted"].items():
            assert abs(overlay["fitted"][factor] - value) <= 1e-3 * abs(value), (name, factor)


def test_the_default_fidelity_and_evaluator_claims_are_rethinkings() -> None:
    """default.yaml's training fidelity ranks candidates best of the ladder's cheaper rungs, and
    scratch-b trains the most accurate models at equal MACs (as the README says)."""
    data = _results("rethinking.json")
    ladder = data["fidelity_ladder"]
    cheaper = {k: v for k, v in ladder["rungs"].items() if k not in ladder["references"]}
    training = yaml.safe_load((ROOT / "autoprune" / "configs" / "default.yaml").read_text())
    default = f"{training['training']['samples']}x{training['training']['epochs']}"
    assert max(cheaper, key=lambda rung: cheaper[rung]["tau"]) == default
    for architecture in ("uniform", "searched"):
        accuracy = {
            key.split()[1]: value["mean"]
            for key, value in data["test_accuracy"].items()
            if key.startswith(architecture)
        }
        assert max(accuracy, key=accuracy.get) == "scratch-b"


def test_the_cpu_training_defaults_passed_train_speed() -> None:
    passes = _results("train_speed.json")["precision"]["summary"]["passes"]
    assert CPU_AUTO_PRECISION in passes
    assert CPU_CHANNELS_LAST and {"fp32-channels-last", "bf16-channels-last"} <= set(passes)


def test_every_benchmark_script_imports(monkeypatch) -> None:
    """A benchmark is run rarely: an import that moved in the package must fail here, not on
    the day someone runs it (each script does its work under ``__main__`` only)."""
    import importlib.util

    folder = ROOT / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))  # the scripts import their `_common` module
    for path in sorted(folder.glob("*.py")):
        name = f"_benchmark_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
        spec.loader.exec_module(module)
