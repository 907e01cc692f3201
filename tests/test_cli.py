"""End to end through the CLI: a tiny real search (synthetic data, resnet20, Optuna, SQLite)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import optuna
import pytest
import torch

import autoprune
from autoprune.cli import main
from autoprune.errors import RunDirError
from autoprune.search import RunDir, pareto_front
from autoprune.spaces import Candidate
from tests.conftest import write_config
from tests.postgres import postgres_bin, postgres_server


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    config = write_config(folder)
    run_dir = folder / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def test_each_trial_records_its_time_per_stage(finished_run: Path) -> None:
    for trial in RunDir(finished_run).load_study().get_trials():
        seconds = trial.user_attrs["seconds"]
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        assert set(seconds) <= {"propose", "costs", "evaluate", "train", "validate", "save"}
        assert all(value >= 0 for value in seconds.values())
        assert sum(seconds.values()) <= wall + 1e-3  # disjoint stages inside the trial
        reference = "reference" in trial.user_attrs  # the base: trained once for the run
        if trial.user_attrs["trained"] and "cached_from" not in trial.user_attrs and not reference:
            train = trial.user_attrs["eval"]["train_seconds"]
            assert seconds["train"] == pytest.approx(train, abs=1e-3)
            assert seconds["validate"] == pytest.approx(
                trial.user_attrs["eval"]["eval_seconds"], abs=1e-3
            )
            assert {"propose", "costs", "evaluate", "train", "validate", "save"} == set(seconds)


def test_search_writes_front_and_report_json_matches(finished_run: Path, capsys) -> None:
    for name in (
        "config.yaml",
        "run.json",
        "study.db",
        "pareto.json",
        "pareto.csv",
        "pareto.png",
        "hypervolume.png",
    ):
        assert (finished_run / name).is_file(), name
    records = RunDir(finished_run).records()
    assert len(records) == 4
    assert all(r.state == "complete" for r in records)
    front = pareto_front(records)
    assert front

    assert main(["report", str(finished_run), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [m["trial"] for m in payload["pareto"]] == [r.number for r in front]
    member = payload["pareto"][0]
    for key in (
        "accuracy",
        "fidelity",
        "test_accuracy",
        "macs",
        "params",
        "size_bytes",
        "latency_ms",
        "latency_source",
        "energy_mj",
        "energy_source",
    ):
        assert member[key] is not None, key
    assert member["latency_source"] == "estimated"
    assert "samples" in member["fidelity"]
    # Each member's architecture: widths, depths, input shape and bit-widths of its candidate.
    for member, record in zip(payload["pareto"], front, strict=True):
        architecture = member["architecture"]
        assert architecture == record.candidate
        assert architecture["input_shape"] == [int(d) for d in member["input_shape"].split("x")]
        assert {"channels", "blocks", "weight_bits", "activation_bits"} <= set(architecture)
        assert Candidate.from_dict(architecture).hash == member["candidate_hash"]
    header = (finished_run / "pareto.csv").read_text().splitlines()[0].split(",")
    assert "candidate_hash" in header and "architecture" not in header  # the CSV stays flat
    assert json.loads((finished_run / "pareto.json").read_text())["pareto"] == payload["pareto"]
    # The hypervolume after every trial, against the reference stored at the study's creation.
    hypervolume = payload["hypervolume"]
    assert [h["trial"] for h in hypervolume["history"]] == [r.number for r in records]
    volumes = [h["hypervolume"] for h in hypervolume["history"]]
    assert volumes == sorted(volumes) and 0 < volumes[-1] == hypervolume["final"] < 1.1**2
    assert hypervolume["reference"]["point"] == [1.0, 1.1, 1.1]
    assert payload["summary"]["proposals"] == 4 and payload["summary"]["feasible"] == 4

    assert main(["report", str(finished_run)]) == 0
    table = capsys.readouterr().out
    assert "(estimated)" in table and "val acc" in table and "fidelity" in table
    assert f"hypervolume: {volumes[-1]:.4f} after 4 trials" in table
    assert "feasible proposals: 4 of 4 (100 %); 4 as proposed, 0 shrunk" in table


def _copy_run(run_dir: Path, dest: Path) -> Path:
    """A plain copy of ``run_dir``: run.json names the study relatively, so it is the copy's."""
    shutil.copytree(run_dir, dest)
    return dest


def test_resume_runs_only_missing_trials(finished_run: Path, tmp_path: Path, capsys) -> None:
    # A plain copy (the other tests of the module count the shared run's 4 trials): the copy
    # resumes into its own study.db.
    config = finished_run.parent / "tiny.yaml"
    run_dir = _copy_run(finished_run, tmp_path / "run")
    before = {t.number: t.datetime_complete for t in _trials(run_dir)}
    assert before == {t.number: t.datetime_complete for t in _trials(finished_run)}
    argv = ["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]
    assert main([*argv, "--trials", "5"]) == 0
    after = _trials(run_dir)
    assert len(after) == 5
    assert {t.number: t.datetime_complete for t in after if t.number in before} == before
    assert len(_trials(finished_run)) == 4  # the shared run is unchanged


def test_export_round_trips(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert main(["export", str(finished_run), "--pareto", "--out", str(out)]) == 0
    front = pareto_front(RunDir(finished_run).records())
    for record in front:
        folder = out / f"trial-{record.number:04d}"
        model = RunDir(finished_run).trained_model(record)
        x = torch.randn(
            2, *record.candidate["input_shape"], generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            expected = model(x[:1]).numpy()
        # the float graph (a quantized trial's integer model.onnx: tests/test_export.py)
        float_onnx = folder / "model.float.onnx"
        session = onnxruntime.InferenceSession(
            str(float_onnx if float_onnx.exists() else folder / "model.onnx")
        )
        (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})
        # A fake-quantized value on a rounding boundary may land one level away in another
        # kernel's summation order (7.8e-4 seen on one random input): 5e-3 as in test_export.py
        tolerance = 5e-3 if float_onnx.exists() else 1e-4
        np.testing.assert_allclose(onnx_out, expected, rtol=tolerance, atol=tolerance)
        scripted = torch.jit.load(str(folder / "model.torchscript.pt"))
        with torch.no_grad():
            np.testing.assert_allclose(scripted(x[:1]).numpy(), expected, rtol=1e-5, atol=1e-5)
        state = torch.load(folder / "model.pt", weights_only=True)
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        assert "estimated" in (folder / "card.md").read_text()


def _wait_while_running(
    process: subprocess.Popen, condition: Callable[[], bool], what: str, log: Path
) -> None:
    """Poll ``condition`` until it holds; fail if ``process`` ends first or after 10 minutes."""
    deadline = time.monotonic() + 600
    while not condition():
        assert process.poll() is None, (
            f"the search ended (exit {process.returncode}) before {what}; its output:\n"
            f"{log.read_text()[-4000:]}"
        )
        assert time.monotonic() < deadline, f"no {what} in 10 minutes"
        time.sleep(0.1)


def _trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(
        study_name="autoprune", storage=RunDir(run_dir).storage_url
    ).get_trials()


def test_weights_of_the_old_quantizer_are_refused_in_one_line(
    finished_run: Path, tmp_path: Path
) -> None:
    trained = [r for r in RunDir(finished_run).records() if r.trained and r.cached_from is None]
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    weights = run_dir / "trials" / f"{trained[-1].number:04d}" / "model.pt"
    state = torch.load(weights, weights_only=True)
    state["conv1.act_min"] = torch.zeros(())  # what a quantized layer saved before LSQ
    torch.save(state, weights)
    with pytest.raises(RunDirError, match=r"older than its LSQ quantizer \(conv1\.act_min, 1 "):
        RunDir(run_dir).trained_model(trained[-1])


def test_binding_budget_gates_training(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, search={"trials": 6, "population_size": 3})
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "search",
                "--config",
                str(config),
                "--run-dir",
                str(run_dir),
                "--quiet",
                "--budget",
                "5mflops",
            ]
        )
        == 0
    )
    records = RunDir(run_dir).records()
    infeasible = [r for r in records if r.feasible is False]
    feasible = [r for r in records if r.feasible]
    assert infeasible and feasible, "the tiny space straddles 5 MFLOPs"
    # Proposals over the MACs budget are shrunk to fit (search.repair); the enqueued base model
    # is the reference and stays as it is.
    assert [r.number for r in infeasible] == [0] and records[0].repair_steps is None
    assert all(r.macs <= 5e6 for r in feasible)
    assert any(r.repair_steps for r in feasible), "some proposal needed shrinking"
    for r in infeasible:
        assert r.macs > 5e6 and not r.trained and r.accuracy is None
        assert not (run_dir / "trials" / f"{r.number:04d}" / "model.pt").exists()
    assert all(r.macs <= 5e6 for r in pareto_front(records))


def test_non_binding_budget_is_said_in_one_line(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, search={"trials": 1})
    assert (
        main(
            [
                "search",
                "--config",
                str(config),
                "--run-dir",
                str(tmp_path / "run"),
                "--quiet",
                "--budget",
                "2gflops",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "does not bind" in line]
    assert len(lines) == 1 and "2gflops" in lines[0]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--budget", "2gflop"], "unknown unit 'gflop'"),
        (["--budget", "-1ms"], "negative"),
        (["--target", "jetsn"], "unknown target 'jetsn'; valid targets:"),
        (["--config", "MISSING"], "does not exist"),
        (["--config", "NOT_UTF8"], "is not UTF-8 text (byte 0: b'\\xff'); save it as UTF-8"),
        (["--config", "A_FOLDER"], "is a directory; pass --config a YAML file"),
        (["--set", "search.trials=abc"], "search.trials must be an int, but got 'abc'"),
        (["--set", "model.colour=red"], "unknown key model.colour"),
        (["--controller", "sgd"], "unknown controller 'sgd'"),
        (["--budget", "1kb"], "cannot be met"),
        (["--set", "data.download=true"], "data set 'synthetic' cannot be downloaded"),
        (["--set", "data.dataset=imagefolder"], "the 'imagefolder' data set needs data.root"),
        (["--config", "/proc/self/mem"], "cannot be read (Input/output error)"),
        (["--config", "A_LIST"], "must hold a mapping of sections"),
        (["--config", "DEEP"], "nests lists or mappings too deeply to read; flatten it"),
        (["--set", "training.epochs=" + "9" * 30], "training.epochs must be an int of at most 18"),
        (["--set", "training.lr=" + "9" * 400], "training.lr must be a number of at most 18"),
        (["--set", "search.seed=" + "9" * 12], "search.seed must be an int in 0..4294967295"),
        (["--set", "data.input_shape=[1, 100000, 28]"], "H and W at most 4096"),
        (["--set", "budgets=[1e999ms]"], "must be a positive finite number"),
        (["--set", "model.name=" + "[" * 600 + "]" * 600], "nests lists or mappings too deeply"),
        (["--set", "model.name=':f'"], "cannot import module '' for the model"),
        (["--set", 'model.weights="a\\0.pt"'], "model.weights must not contain a NUL character"),
        (["--target", "NOT_UTF8"], "is not UTF-8 text (byte 0: b'\\xff'); save it as UTF-8"),
        (["--target", "A_FOLDER"], "is a directory; pass a profile name"),
        (["--target", "A_LIST"], "a profile must be a mapping of field -> value, got list"),
        (["--target", "BAD_OVERLAY"], "fitted names unknown factor 'compute_eficiency.fp16'"),
        (["--run-dir", "LONG"], "cannot be used: File name too long"),
        (["--run-dir", "NOT_UTF8_NAME"], "--run-dir '/"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys, argv: list[str], fragment: str
) -> None:
    config = write_config(tmp_path)
    paths = _bad_files(tmp_path)
    argv = [str(paths[a]) if a in paths else a for a in argv]
    run_dir = tmp_path / "run"
    args = ["search", "--quiet"]
    if "--run-dir" not in argv:
        args += ["--run-dir", str(run_dir)]
    if "--config" not in argv:
        args += ["--config", str(config)]
    before = sorted(tmp_path.rglob("*"))
    assert main(args + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not run_dir.exists() and sorted(tmp_path.rglob("*")) == before


def _bad_files(folder: Path) -> dict[str, Path]:
    """Files a new user could pass by mistake, by the placeholder tests write in their argv."""
    (folder / "latin1.yaml").write_bytes(b"\xffmodel: {}\n")
    (folder / "list.yaml").write_text("- model\n- data\n")
    (folder / "deep.yaml").write_text("model: " + "[" * 600 + "]" * 600 + "\n")
    (folder / "empty").mkdir()
    (folder / "notes.txt").write_text("mine\n")
    # A user's profile whose calibration overlay was edited by hand, with a misspelt factor.
    profile = folder / "board.yaml"
    shutil.copy(Path(autoprune.__file__).parent / "hwprofiles/profiles/jetson-nano.yaml", profile)
    text = profile.read_text().replace("name: jetson-nano", "name: board", 1)
    profile.write_text(text)
    (folder / "board.calibration.yaml").write_text("fitted: {compute_eficiency.fp16: 0.5}\n")
    return {
        "MISSING": folder / "missing.yaml",
        "NOT_UTF8": folder / "latin1.yaml",
        "A_FOLDER": folder,
        "A_LIST": folder / "list.yaml",
        "DEEP": folder / "deep.yaml",
        "EMPTY_DIR": folder / "empty",
        "A_FILE": folder / "notes.txt",
        "OUT": folder / "out",
        "BAD_OVERLAY": profile,
        "LONG": folder / ("r" * 300),
        "NOT_UTF8_NAME": folder / os.fsdecode(b"r\xff"),  # a name from another encoding
    }


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["report", "MISSING"], "is not an autoprune run directory (no run.json)"),
        (["report", "EMPTY_DIR", "--format", "json"], "is not an autoprune run directory"),
        (["report", "A_FILE"], "is not an autoprune run directory"),
        (["report", "LONG"], "run directory '/"),
        (["report", "NOT_UTF8_NAME"], "is not UTF-8 text; rename it"),
        (["export", "NOT_UTF8_NAME", "--pareto"], "is not UTF-8 text; rename it"),
        (["export", "EMPTY_DIR", "--pareto", "--out", "OUT"], "is not an autoprune run directory"),
        (["export", "A_FILE", "--trial", "0", "--out", "OUT"], "is not an autoprune run"),
        (["export", "EMPTY_DIR", "--pareto", "--out", "LONG"], "--out '/"),
        (["export", "EMPTY_DIR", "--pareto", "--retrain-epochs", "2"], "applies only with"),
        (["profile", "--target", "jetson", "--model", "resnet2000"], "unknown model 'resnet2000'"),
        (["profile", "--target", "jetsn", "--model", "resnet18"], "unknown target 'jetsn'"),
        (["profile", "--target", "NOT_UTF8", "--model", "resnet18"], "is not UTF-8 text"),
        (["profile", "--target", "BAD_OVERLAY", "--model", "resnet18"], "unknown factor"),
        (["profile", "--target", "A_LIST", "--model", "resnet18"], "must be a mapping"),
        (["profile", "--target", "host", "--model", "resnet18", "--input", "3x9000x9000"], "4096"),
        (["profile", "--target", "host", "--model", "x", "--tuning-dir", "A_FILE"], "is a file"),
        (["profile", "--target", "jetson", "--model", "resnet18", "--num-classes", "1"], ">= 2"),
        (["calibrate", "--target", "jetsn"], "unknown target 'jetsn'"),
        (["calibrate", "--target", "jetson", "--rows", "MISSING"], "cannot read calibration rows"),
        (["calibrate", "--target", "jetson", "--rows", "A_FOLDER"], "Is a directory"),
        (["calibrate", "--target", "jetson", "--rows", "A_LIST"], "missing column 'board'"),
        (["calibrate", "--target", "jetson", "--cache-dir", "A_FILE"], "is a file; pass a folder"),
        (["board", "--rpc-tracker", "nope", "--rpc-key", "k"], "is not HOST:PORT"),
    ],
)
def test_bad_input_to_any_subcommand_is_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys, argv: list[str], fragment: str
) -> None:
    paths = _bad_files(tmp_path)
    argv = [str(paths[a]) if a in paths else a for a in argv]
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert sorted(tmp_path.rglob("*")) == before  # no export folder, no overlay, no cache


def test_export_of_a_run_whose_trials_are_missing_is_one_line_and_writes_nothing(
    finished_run: Path, tmp_path: Path, capsys
) -> None:
    run_dir = _copy_run(finished_run, tmp_path / "run")
    shutil.rmtree(run_dir / "trials")
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--pareto", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights of trial" in err[0] and "are missing" in err[0], err
    assert not out.exists()
    assert main(["report", str(run_dir), "--format", "json"]) == 0  # the study has the records
    assert len(json.loads(capsys.readouterr().out)["pareto"]) >= 1


def test_an_unreadable_config_is_one_line(tmp_path: Path, capsys) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its mode (the /proc/self/mem case covers it)")
    config = write_config(tmp_path)
    config.chmod(0)
    assert main(["search", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be read (Permission denied)" in err[0], err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--timeout", "abc"], "argument --timeout: invalid float value: 'abc'"),
        (["search", "--trials"], "argument --trials: expected one argument"),
        (["report"], "the following arguments are required: RUN_DIR"),
        (["export", "RUN", "--format", "onnx"], "one of the arguments --trial --pareto is"),
        (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
    ],
)
def test_a_bad_option_is_one_line_naming_it_and_the_help(capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].endswith("--help`"), err


def test_a_run_dir_that_is_a_file_is_one_line_and_the_file_is_kept(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    assert main(["search", "--config", str(config), "--run-dir", str(taken), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder; pass --run-dir a new folder" in err[0]
    assert taken.read_text() == "mine\n"


def test_search_help_lists_the_data_sets(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["search", "--help"])
    assert info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "data sets for --set data.dataset=NAME: cifar10, cifar100, fashion-mnist," in help_text
    assert "imagefolder, mnist, synthetic" in help_text


def test_bad_yaml_key_in_file(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, training={"epoch": 2})
    assert main(["search", "--config", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown key training.epoch" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "storage"),
    [(signal.SIGINT, "sqlite"), (signal.SIGKILL, "sqlite"), (signal.SIGINT, "postgresql")],
    ids=["ctrl-c", "kill-9", "ctrl-c-postgresql"],
)
def test_interrupt_and_resume_loses_nothing(tmp_path: Path, signum: int, storage: str) -> None:
    if storage == "postgresql":
        if postgres_bin() is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        with postgres_server() as url:
            _interrupt_and_resume(tmp_path, signum, ["--storage", url])
    else:
        _interrupt_and_resume(tmp_path, signum, [])


#: The CLI with training gated, for the interrupt tests: once ``GATE/armed`` exists, a trial
#: that starts training writes ``GATE/waiting`` and waits there until it is interrupted, so the
#: signal lands inside a trial whatever the machine's speed.
_GATED_CLI = """
import sys, time
from pathlib import Path

import autoprune.evaluators._evaluator as evaluator
from autoprune.cli import main

gate = Path(sys.argv.pop(1))
train_model = evaluator.train_model


def gated(*args, **kwargs):
    if (gate / "armed").exists():
        (gate / "waiting").touch()
        while True:
            time.sleep(0.01)
    return train_model(*args, **kwargs)


evaluator.train_model = gated
sys.exit(main(sys.argv[1:]))
"""


def _interrupt_and_resume(tmp_path: Path, signum: int, storage: list[str]) -> None:
    trials = 5
    config = write_config(
        tmp_path,
        search={"trials": trials, "population_size": 2},
        hardware={"estimator": "layers"},  # no TVM lowering: the trials are all training
    )
    run_dir = tmp_path / "run"
    gate = tmp_path / "gate"
    gate.mkdir()
    (tmp_path / "gated_cli.py").write_text(_GATED_CLI)
    cli = [sys.executable, str(tmp_path / "gated_cli.py"), str(gate)]
    command = [*cli, "search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]
    command += storage
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    log = tmp_path / "search.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            # A suite started in the background by a non-interactive shell (`.ci/run &`)
            # inherits SIGINT ignored, and Python then leaves it ignored: Ctrl-C is a terminal's,
            # so the search gets it as a terminal would send it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def finished() -> bool:
        if not (run_dir / "run.json").exists():  # the storage has its tables from then on
            return False
        try:
            states = [t.state for t in _trials(run_dir)]
        except Exception:  # noqa: BLE001 - the other process is still creating the study
            return False
        return optuna.trial.TrialState.COMPLETE in states

    # After the first trial, so that a finished trial is kept; before the last, so that a whole
    # trial lies between the signal and the search's end.
    _wait_while_running(process, finished, "a finished trial", log)
    (gate / "armed").touch()
    _wait_while_running(process, (gate / "waiting").exists, "a trial waiting at the gate", log)
    process.send_signal(signum)
    assert process.wait(timeout=60) == (130 if signum == signal.SIGINT else -signal.SIGKILL), (
        log.read_text()[-4000:]
    )
    (gate / "armed").unlink()  # the rerun trains freely
    killed = _trials(run_dir)
    finished = {
        t.number: t.datetime_complete for t in killed if t.state == optuna.trial.TrialState.COMPLETE
    }
    # Ctrl-C leaves the trial failed and marked interrupted; kill -9 leaves it running.
    running = [t for t in killed if t.state != optuna.trial.TrialState.COMPLETE]
    assert finished and len(running) == 1

    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    resumed = _trials(run_dir)
    complete = [t for t in resumed if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == trials
    assert {t.number: t.datetime_complete for t in complete if t.number in finished} == finished
    retried = [t for t in complete if t.user_attrs.get("retry_of") == running[0].number]
    # The retry has the interrupted trial's parameters (all of them: it was training).
    assert len(retried) == 1 and retried[0].params == running[0].params
    assert (run_dir / "study.db").exists() == (not storage)

    report = subprocess.run(
        [*cli, "report", str(run_dir), "--format", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The interrupted attempt stays as a failed trial (costed: it was training), beside its retry.
    summary = json.loads(report.stdout)["summary"]
    assert summary["trials"] == len(resumed) == trials + 1 and summary["failed"] == 1
    assert summary["trained"] + summary["cached"] == trials


def test_targets_and_profile(capsys) -> None:
    assert main(["targets", "--format", "json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)}
    assert {"jetson-orin-nano", "jetson-nano", "raspberry-pi-4", "host"} <= names
    assert main(["targets"]) == 0
    table = capsys.readouterr().out
    assert "jetson-orin-nano" in table and "nvidia/jetson-orin-nano" in table
    assert main(["profile", "--target", "jetson", "--model", "resnet50", "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["macs"] == pytest.approx(4.09e9, rel=0.01)
    assert record["latency_source"] == "estimated" and record["latency_ms"] > 0
    assert main(["profile", "--target", "jetson-nano", "--model", "resnet18"]) == 0
    assert "(estimated" in capsys.readouterr().out
    assert main(["profile", "--target", "jetson", "--model", "resnet18", "--input", "3x224"]) == 2
    assert "not CxHxW" in capsys.readouterr().err


def test_profile_measure_of_an_unreachable_board_says_how(capsys) -> None:
    assert main(["profile", "--target", "jetson", "--model", "resnet18", "--measure"]) == 2
    assert "--rpc-tracker HOST:PORT --rpc-key KEY" in capsys.readouterr().err


@pytest.mark.slow
def test_failed_measurement_is_a_failed_trial_and_the_search_goes_on(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, search={"trials": 2}, target="host", hardware={"measure_timeout_s": 0.5}
    )
    run_dir = tmp_path / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["failed", "failed"]
    assert all("timeout" in r.error for r in records)
