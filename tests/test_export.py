"""``autoprune export`` of a run with quantized trials: every format runs in its own runtime and
matches PyTorch at batch 1 and 8, model.json says how to feed it, and a failure leaves no
partial trial folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from autoprune.cli import main
from autoprune.export import EXPORT_FORMATS, export_run
from autoprune.export._formats import ExportFormat
from autoprune.search import RunDir
from tests.conftest import write_config

BATCHES = (1, 8)


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trial 0 the float base, trial 1 with binary, 8-, 16- and 32-bit weights (jetson: 16 as
    fp16) and some layers split in two low-rank ones."""
    folder = tmp_path_factory.mktemp("run")
    space = {
        "weight_bits": [1, 8, 16, 32],
        "activation_bits": [8, 16, 32],
        "rank_ratios": [0.5, 1.0],
    }
    config = write_config(folder, space=space, search={"trials": 2, "population_size": 2})
    run_dir = folder / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


@pytest.fixture(scope="module")
def exported(quantized_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    args = ["export", str(quantized_run), "--trial", "0", "--trial", "1", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    return out


def _inputs(shape: list[int]) -> torch.Tensor:
    return torch.randn(max(BATCHES), *shape, generator=torch.Generator().manual_seed(1))


def _assert_same_top1(got: np.ndarray, reference: np.ndarray, tolerance: float) -> None:
    """The same class wherever the reference's top two logits are more than ``2 * tolerance``
    apart (closer ones may swap within the tolerance)."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * tolerance
    assert (got.argmax(1) == reference.argmax(1))[clear].all()


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path))


def test_every_format_runs_in_its_runtime_and_matches_pytorch(
    quantized_run: Path, exported: Path
) -> None:
    run = RunDir(quantized_run)
    for number in (0, 1):
        record = run.records()[number]
        model = run.trained_model(record)
        folder = exported / f"trial-{number:04d}"
        x = _inputs(record.candidate["input_shape"])
        with torch.no_grad():
            expected = model(x).numpy()
        scripted = torch.jit.load(str(folder / "model.torchscript.pt"))
        program = torch.export.load(str(folder / "model.pt2")).module()
        float_onnx = folder / ("model.float.onnx" if number else "model.onnx")
        # Kernels that sum in another order (onnxruntime's, or PyTorch's own at another batch
        # size) may put a fake-quantized value on a rounding boundary one level away, which
        # moves these logits by up to about 2e-3: quantized trials are held to 5e-3 and the same
        # top-1, float ones to 1e-4
        tolerance = 5e-3 if number else 1e-4
        for batch in BATCHES:
            with torch.no_grad():
                reference = model(x[:batch]).numpy()
                runs = [scripted(x[:batch]).numpy(), program(x[:batch]).numpy()]
            runs += _session(float_onnx).run(None, {"input": x[:batch].numpy()})
            for got in runs:
                np.testing.assert_allclose(got, reference, rtol=tolerance, atol=tolerance)
                _assert_same_top1(got, reference, tolerance)
        if number == 0:
            assert not (folder / "model.float.onnx").exists()
            continue
        # The integer model: fp16 and integer kernels round differently from the fake-quantized
        # float graph, so it is held to the same top-1 on this batch and logits within 0.05.
        (integer,) = _session(folder / "model.onnx").run(None, {"input": x.numpy()})
        np.testing.assert_allclose(integer, expected, atol=5e-2)
        _assert_same_top1(integer, expected, 5e-2)


def test_a_quantized_trial_is_an_integer_model_and_model_json_says_how_to_feed_it(
    quantized_run: Path, exported: Path
) -> None:
    run = RunDir(quantized_run)
    record = run.records()[1]
    folder = exported / "trial-0001"
    info = json.loads((folder / "model.json").read_text())
    data = json.loads(run.data_file.read_text())
    assert info["input"]["name"] == "input" and info["output"]["name"] == "logits"
    assert info["input"]["shape"] == ["batch", *record.candidate["input_shape"]]
    assert info["input"]["layout"] == "NCHW" and info["input"]["dtype"] == "float32"
    assert info["input"]["normalisation"]["mean"] == data["mean"]
    assert info["input"]["normalisation"]["in_graph"] is False
    assert info["class_names"] == data["class_names"]
    assert info["architecture"] == record.candidate
    assert info["accuracy"]["validation"] == record.accuracy and info["accuracy"]["fidelity"]
    assert {f["file"]: f["form"] for f in info["files"]} == {
        "model.onnx": "qdq",
        "model.float.onnx": "fake-quantized",
        "model.torchscript.pt": "fake-quantized",
        "model.pt2": "fake-quantized",
    }
    split = record.candidate["ranks"]  # a split layer is two, each at the layer's bits
    assert split and set(record.candidate["weight_bits"].values()) >= {1, 32}
    bits = {
        half: width
        for name, width in record.candidate["weight_bits"].items()
        for half in ([f"{name}.0", f"{name}.1"] if name in split else [name])
    }
    layers = {layer["layer"]: layer for layer in info["layers"]}
    for name, width in bits.items():
        expected = {1: "int8", 8: "int8", 16: "fp16", 32: "fp32"}[width]  # jetson: fp16 native
        assert layers.get(name, {"weights": "fp32"})["weights"] == expected, name
    proto = onnx.load(str(folder / "model.onnx"))
    producer = {out: node for node in proto.graph.node for out in node.output}
    convs = [producer[n.input[0]] for n in proto.graph.node if n.op_type == "BatchNormalization"]
    unfolded = [c for c in convs if producer.get(c.input[1], c).op_type == "DequantizeLinear"]
    assert not unfolded  # batch norms after integer weights are folded into their scales
    weights = [t.data_type for t in proto.graph.initializer if len(t.dims) >= 2]
    for widths, dtype in (((1, 8), onnx.TensorProto.INT8), ((16,), onnx.TensorProto.FLOAT16)):
        # stored at their precision: constant folding turned none back into float32
        assert weights.count(dtype) == sum(b in widths for b in bits.values())
    assert (folder / "model.onnx").stat().st_size < (folder / "model.float.onnx").stat().st_size
    card = (folder / "card.md").read_text()
    assert "logits" in card and "model.onnx" in card and "mean" in card


def test_normalisation_folded_into_the_graph_takes_pixel_values(
    quantized_run: Path, tmp_path: Path
) -> None:
    (item,) = export_run(
        quantized_run, trials=[0], formats=["onnx"], out_dir=tmp_path, fold_normalisation=True
    )
    run = RunDir(quantized_run)
    data = json.loads(run.data_file.read_text())
    pixels = torch.randint(0, 256, (4, 1, 28, 28)).float()
    normalised = (pixels / 255 - data["mean"][0]) / data["std"][0]
    with torch.no_grad():
        expected = run.trained_model(run.records()[0])(normalised).numpy()
    (got,) = _session(item.folder / "model.onnx").run(None, {"input": pixels.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    info = json.loads((item.folder / "model.json").read_text())
    assert info["input"]["normalisation"]["in_graph"] is True
    assert info["input"]["values"] == "pixel values in 0..255"


def _failing(name: str, error: BaseException, on_trial: int, monkeypatch) -> None:
    """Make format ``name`` raise ``error`` when writing trial ``on_trial``."""
    original = EXPORT_FORMATS[name]

    def write(job, folder):
        if folder.name.startswith(f"trial-{on_trial:04d}"):
            raise error
        return original.write(job, folder)

    monkeypatch.setitem(EXPORT_FORMATS, name, ExportFormat(name, original.description, write))


def test_an_export_killed_in_the_middle_leaves_no_partial_trial_folder(
    quantized_run: Path, tmp_path: Path, monkeypatch
) -> None:
    _failing("torchscript", KeyboardInterrupt(), on_trial=1, monkeypatch=monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        export_run(quantized_run, trials=[0, 1], formats=["onnx", "torchscript"], out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-0000"]  # 1 half-written: gone
    assert (tmp_path / "trial-0000" / "model.json").is_file()

    monkeypatch.undo()  # the export again: complete; a later kill keeps the complete folder
    export_run(quantized_run, trials=[1], formats=["onnx"], out_dir=tmp_path)
    _failing("onnx", KeyboardInterrupt(), on_trial=1, monkeypatch=monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        export_run(quantized_run, trials=[1], formats=["onnx"], out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-0000", "trial-0001"]
    assert json.loads((tmp_path / "trial-0001" / "model.json").read_text())["files"]


def test_a_format_that_fails_is_skipped_in_one_line_and_the_rest_written(
    quantized_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    _failing("torchscript", RuntimeError("tracer broke\nsecond line"), 1, monkeypatch)
    args = ["export", str(quantized_run), "--trial", "0", "--trial", "1", "--out", str(tmp_path)]
    assert main([*args, "--format", "onnx,torchscript", "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autoprune: trial 1: torchscript skipped: RuntimeError: tracer broke"]
    assert (tmp_path / "trial-0000" / "model.torchscript.pt").is_file()
    written = sorted(p.name for p in (tmp_path / "trial-0001").iterdir())
    assert "model.onnx" in written and "model.torchscript.pt" not in written


def test_bad_export_requests_are_one_line_and_write_nothing(
    quantized_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    for extra, says in (
        (["--target", "nowhere"], "nowhere"),
        (["--format", "onnx,gguf"], "gguf"),
    ):
        assert main(["export", str(quantized_run), "--trial", "1", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0]
        assert not out.exists() or not any(out.iterdir())
