from __future__ import annotations

import json
import math

import pytest

from autoprune.errors import ConfigError
from autoprune.evaluators import EvalResult, Fidelity


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"samples": 0, "epochs": 1}, "fidelity.samples"),
        ({"samples": -5, "epochs": 1}, "fidelity.samples"),
        ({"samples": 1.5, "epochs": 1}, "fidelity.samples"),
        ({"samples": True, "epochs": 1}, "fidelity.samples"),
        ({"samples": 100, "epochs": 0}, "fidelity.epochs"),
        ({"samples": 100, "epochs": 0.5}, "fidelity.epochs"),
        ({"samples": 100, "epochs": math.inf}, "fidelity.epochs"),
        ({"samples": 100, "epochs": "2"}, "fidelity.epochs"),
        ({"samples": 100, "epochs": True}, "fidelity.epochs"),
        ({"samples": 100, "epochs": 1, "resolution_scale": 0.0}, "fidelity.resolution_scale"),
        ({"samples": 100, "epochs": 1, "resolution_scale": 1.5}, "fidelity.resolution_scale"),
        ({"samples": 100, "epochs": 1, "resolution_scale": math.nan}, "fidelity.resolution_scale"),
        ({"samples": 100, "epochs": 1, "resolution_scale": "0.5"}, "fidelity.resolution_scale"),
        ({"samples": 100, "epochs": 1, "batch_size": 0}, "fidelity.batch_size"),
    ],
)
def test_fidelity_rejects_out_of_range_values(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        Fidelity(**kwargs)  # type: ignore[arg-type]
    bad = next(v for k, v in kwargs.items() if k == field.split(".")[1])
    assert repr(bad) in str(info.value)
    assert "\n" not in str(info.value)


def test_fidelity_accepts_boundaries_and_normalises_scale_to_float() -> None:
    f = Fidelity(samples=1, epochs=1, resolution_scale=1, batch_size=1)
    assert f.resolution_scale == 1.0 and isinstance(f.resolution_scale, float)
    assert Fidelity(samples=None, epochs=1).samples is None
    whole = Fidelity(samples=None, epochs=2.0)
    assert whole.epochs == 2 and isinstance(whole.epochs, int)
    assert whole == Fidelity(samples=None, epochs=2)  # one schedule, one equal record
    assert Fidelity(samples=None, epochs=1.43).epochs == 1.43


def test_fidelity_labels_and_training_resolution() -> None:
    f = Fidelity(samples=20000, epochs=2)
    assert f.describe((28, 28)) == "20000 samples x 2 epochs @ 28x28"
    assert f.label == "20000 samples x 2 epochs @ 1x res"
    half = Fidelity(samples=None, epochs=3, resolution_scale=0.5)
    assert half.describe((28, 32)) == "all samples x 3 epochs @ 14x16"
    assert half.label == "all samples x 3 epochs @ 0.5x res"
    assert Fidelity(samples=20000, epochs=1).describe((28, 28)) == "20000 samples x 1 epoch @ 28x28"
    assert Fidelity(samples=20000, epochs=1.43).label == "20000 samples x 1.43 epochs @ 1x res"
    assert Fidelity(samples=None, epochs=1, resolution_scale=0.75).train_hw((28, 28)) == (21, 21)
    assert Fidelity(samples=None, epochs=1, resolution_scale=0.01).train_hw((28, 28)) == (1, 1)


def test_fidelity_round_trips_through_json() -> None:
    for f in (
        Fidelity(samples=20000, epochs=2),
        Fidelity(samples=None, epochs=5, resolution_scale=0.5, batch_size=64),
        Fidelity(samples=20000, epochs=1.43),
    ):
        assert Fidelity.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def test_fidelity_from_dict_names_unknown_keys_and_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'sample'.*valid fields: samples, epochs"):
        Fidelity.from_dict({"sample": 10, "epochs": 1})


def test_fidelity_is_frozen_and_keyword_only() -> None:
    f = Fidelity(samples=10, epochs=1)
    with pytest.raises(AttributeError):
        f.epochs = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Fidelity(10, 1)  # type: ignore[misc]


def test_eval_result_round_trips_through_json() -> None:
    r = EvalResult(
        accuracy=0.871,
        split="val",
        fidelity=Fidelity(samples=20000, epochs=2, resolution_scale=0.5),
        input_hw=(14, 14),
        train_seconds=80.5,
        images_per_second=497.2,
        epochs=2,
        samples=20000,
        seed=3,
        train_loss=0.3625,
    )
    text = json.dumps(r.to_dict())
    back = EvalResult.from_dict(json.loads(text))
    assert back == r
    assert back.input_hw == (14, 14) and isinstance(back.fidelity, Fidelity)
    assert r.label == "val acc 87.10% (20000 samples x 2 epochs @ 14x14)"
