"""optuna-dashboard tells an autoprune run's feasible trials from its infeasible ones.

optuna-dashboard (0.21) reads a trial's constraints only from Optuna 4's system attribute
``constraints`` (a list) and its front end counts a trial feasible when every value is ``<= 0``
(``constraints.every(c => c <= 0)`` in its bundle, an empty list included). autoprune writes
each trial's budget violations there, in the run's budget order (``set_constraints``); a study
begun before keeps Optuna 5's named form (``constraints:<spec>``), so that its samplers see one
form.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard._app import create_app
from optuna_dashboard._serializer import serialize_frozen_trial

from autoprune.cli import main
from autoprune.search import RunDir
from autoprune.search._objective import set_constraints
from tests.conftest import write_config

#: Both bind: the unpruned base (31.0 M MACs, 272 k params) breaks both, so the reference trial
#: is infeasible; repair shrinks every other proposal until it fits.
BUDGETS = ["10mflops", "100kparams"]
LIMITS = {"macs": 10e6, "params": 100e3}  # the budgets' metrics and limits, in budget order


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real search: 3 trials scored by the proxy evaluator, per-layer latency estimates."""
    folder = tmp_path_factory.mktemp("dashboard")
    config = write_config(
        folder,
        search={"trials": 3},
        hardware={"estimator": "layers"},
        budgets=BUDGETS,
    )
    run = folder / "run"
    argv = ["search", "--config", str(config), "--run-dir", str(run), "--quiet"]
    assert main([*argv, "--evaluator", "proxy"]) == 0
    return run


def _study_detail(run_dir: Path) -> dict[str, Any]:
    """``GET /api/studies/<id>`` of the dashboard's own web app on the run's storage."""
    storage = optuna.storages.RDBStorage(RunDir(run_dir).storage_url)
    study_id = storage.get_study_id_from_name(RunDir(run_dir).meta()["study_name"])
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/api/studies/{study_id}",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }
    body = create_app(storage)(environ, lambda code, headers, *exc: status.append(code))
    assert status == ["200 OK"]
    return json.loads(b"".join(body))


def _feasible(constraints: list[float]) -> bool:
    """The dashboard front end's rule."""
    return all(c <= 0 for c in constraints)


@pytest.mark.slow  # the search: about 16 s
def test_the_dashboard_web_api_shows_each_trials_budget_violations_in_budget_order(
    run_dir: Path,
) -> None:
    trials = RunDir(run_dir).load_study().get_trials()
    served = {t["number"]: t for t in _study_detail(run_dir)["trials"]}
    assert sorted(served) == [t.number for t in trials] == [0, 1, 2]
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        costs, violations = trial.user_attrs["costs"], trial.user_attrs["violations"]
        expected = [costs[metric] / limit - 1 for metric, limit in LIMITS.items()]
        constraints = served[trial.number]["constraints"]
        assert list(violations) == BUDGETS
        assert constraints == [violations[spec] for spec in BUDGETS]
        assert constraints == pytest.approx(expected)
        assert _feasible(constraints) is trial.user_attrs["feasible"]
        # One form only: Optuna 5 reads the list as "0", "1"; no named copy counts twice.
        assert trial.constraints == {"0": constraints[0], "1": constraints[1]}
        assert not any(key.startswith("constraints:") for key in trial.system_attrs)
    feasible = {n for n, t in served.items() if _feasible(t["constraints"])}
    assert 0 not in feasible  # the unpruned base breaks both budgets
    assert feasible == {1, 2}  # repaired to fit


@pytest.mark.slow  # the search: about 16 s
def test_the_dashboard_serializer_sees_the_same_constraints(run_dir: Path) -> None:
    study = RunDir(run_dir).load_study()
    for trial in study.get_trials():
        serialized = serialize_frozen_trial(study._study_id, trial, {})
        assert serialized["constraints"] == list(trial.constraints.values())
        assert len(serialized["constraints"]) == len(BUDGETS)


def _old_study(storage: str) -> optuna.Study:
    """A study begun before the list form: one trial with named constraints."""
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    trial = study.ask({"w": optuna.distributions.CategoricalDistribution((1, 2))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial.set_constraint("10mflops", 0.5)
        trial.set_constraint("100kparams", -0.25)
    study.tell(trial, [0.5, 1.0])
    return study


def test_a_study_begun_with_named_constraints_keeps_them_on_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    name = _old_study(url).study_name
    resumed = optuna.load_study(study_name=name, storage=url)  # a new process
    trial = resumed.ask({"w": optuna.distributions.CategoricalDistribution((1, 2))})
    set_constraints(trial, {"10mflops": -0.5, "100kparams": 0.75})
    resumed.tell(trial, [0.25, 0.5])
    old, new = resumed.get_trials()
    for frozen in (old, new):  # the same names and number for every trial of the study
        assert "constraints" not in frozen.system_attrs
        assert set(frozen.constraints) == {"10mflops", "100kparams"}
    assert new.constraints == {"10mflops": -0.5, "100kparams": 0.75}


def test_a_new_study_gets_the_list_and_nan_is_refused(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize"])
    trial = study.ask({"w": optuna.distributions.CategoricalDistribution((1, 2))})
    with pytest.raises(ValueError, match="NaN"):
        set_constraints(trial, {"10mflops": float("nan")})
    set_constraints(trial, {"100kparams": 1, "10mflops": -0.5})  # the given (budget) order
    study.tell(trial, [0.5])
    (frozen,) = study.get_trials()
    assert frozen.system_attrs["constraints"] == [1.0, -0.5]
    assert frozen.constraints == {"0": 1.0, "1": -0.5}
    assert not any(key.startswith("constraints:") for key in frozen.system_attrs)
