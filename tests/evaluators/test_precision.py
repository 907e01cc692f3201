"""training.device and training.precision: where and in what precision candidates train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprune.config import EvaluatorConfig, TrainingConfig, load_config
from autoprune.errors import ConfigError
from autoprune.evaluators import (
    CPU_AUTO_PRECISION,
    DatasetSplits,
    Fidelity,
    TrainedBase,
    create_evaluator,
    load_dataset,
    train_model,
)
from autoprune.evaluators._evaluate import _native_bf16, resolve_device, resolve_precision
from autoprune.spaces import Candidate
from tests.conftest import tiny_cnn

SHAPE = (1, 28, 28)
CPU = torch.device("cpu")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA GPU")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    return load_dataset("synthetic", val_samples=500, seed=0)


#: What ``auto`` is on this host's CPU.
CPU_AUTO = CPU_AUTO_PRECISION if CPU_AUTO_PRECISION != "bf16" or _native_bf16() else "fp32"


def test_precisions_resolve_to_autocast_dtypes_on_the_cpu() -> None:
    assert resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    auto = {"fp32": None, "bf16": torch.bfloat16}[CPU_AUTO]
    assert resolve_precision("auto", CPU) is auto and resolve_precision(None, CPU) is auto
    with pytest.raises(ConfigError, match="fp16, which trains fast on GPUs only") as info:
        resolve_precision("fp16", CPU)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="training.precision must be one of auto, fp32"):
        resolve_precision("fp64", CPU)


@no_cuda
def test_auto_device_is_the_cpu_and_cuda_without_a_gpu_is_one_line() -> None:
    assert resolve_device("auto") == resolve_device(None) == CPU
    with pytest.raises(ConfigError, match="no CUDA GPU here.*set training.device: auto or cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="training.device must be auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("training.device=gpu", "training.device must be auto"),
        ("training.precision=half", "training.precision must be auto, fp32, bf16 or fp16"),
    ],
)
def test_config_values_are_checked(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(overrides=[override])
    assert (TrainingConfig().device, TrainingConfig().precision) == ("auto", "auto")
    config = load_config()  # the embedded default trains in fp32 (see default.yaml)
    assert (config.training.device, config.training.precision) == ("auto", "fp32")


def test_auto_trains_as_the_cpu_default_and_both_precisions_learn(data: DatasetSplits) -> None:
    fidelity = Fidelity(samples=600, epochs=1, batch_size=64)
    results = {}
    for precision in (None, "auto", CPU_AUTO, "bf16", "fp32"):
        model = tiny_cnn()
        results[precision] = train_model(
            model, data, fidelity=fidelity, input_shape=SHAPE, seed=0, precision=precision
        )
        # handed back in float32, contiguous, whatever it trained in
        assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    assert results[None].accuracy == results["auto"].accuracy == results[CPU_AUTO].accuracy
    assert results["bf16"].accuracy > 0.3 and results["fp32"].accuracy > 0.3  # chance is 0.1


def test_the_run_s_training_settings_reach_the_trainer(data: DatasetSplits, tmp_path: Path) -> None:
    # fp16 is refused on the CPU before anything trains: proof that the setting got through
    training = TrainingConfig(samples=64, epochs=1, batch_size=32, device="cpu", precision="fp16")
    candidate = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=SHAPE)
    base = TrainedBase(candidate, data=lambda: data, training=training, seed=0, folder=tmp_path)
    scratch = create_evaluator(
        EvaluatorConfig(name="scratch-e"), data=lambda: data, training=training, base=base
    )
    with pytest.raises(ConfigError, match="fp16"):
        scratch.evaluate(candidate, seed=0)
    with pytest.raises(ConfigError, match="fp16"):
        base.get()


@needs_cuda
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_gpu_autocast_trains_channels_last_and_hands_back_a_contiguous_model(
    data: DatasetSplits, precision: str
) -> None:
    model = tiny_cnn()
    result = train_model(
        model,
        data,
        fidelity=Fidelity(samples=None, epochs=2),
        input_shape=SHAPE,
        seed=0,
        device="cuda",
        precision=precision,
    )
    assert result.accuracy > 0.6
    conv = model[0].weight
    assert conv.device.type == "cuda" and conv.is_contiguous()
