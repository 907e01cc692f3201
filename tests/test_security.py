"""What autoprune trusts (SECURITY.md): files a user hands over are read as data, a board
listens on loopback unless told otherwise, and an export writes inside its output folder only."""

from __future__ import annotations

import ast
import socket
import sys
from pathlib import Path

import pytest
import yaml

from autoprune.cli._parser import build_parser
from autoprune.errors import AutopruneError, ConfigError
from autoprune.export import export_run
from autoprune.export._run import _replace
from autoprune.hwprofiles import (
    estimate_hardware,
    exposure_note,
    load_profile,
    profile_file,
    serve_board,
)
from autoprune.spaces import count_costs
from tests.conftest import tiny_cnn

PACKAGE = Path(__file__).resolve().parent.parent / "autoprune"
#: Modules that may unpickle, and why: a restricted unpickler that loads numpy arrays and plain
#: containers only (data sets); and payloads this process sends its own worker processes.
UNPICKLERS = {
    "evaluators/_readers.py": "restricted to numpy arrays, lists, dicts and strings",
    "hwprofiles/_workers.py": "payloads between this process and its own workers",
}


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """``(dotted name, call)`` of every call whose callee is a plain dotted name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, callee = [], node.func
            while isinstance(callee, ast.Attribute):
                parts.append(callee.attr)
                callee = callee.value
            if isinstance(callee, ast.Name):
                found.append((".".join([callee.id, *reversed(parts)]), node))
    return found


def test_files_a_user_hands_over_are_read_as_data() -> None:
    """torch.load with weights_only=True, yaml.safe_load only, and pickle only where listed."""
    problems, modules = [], sorted(PACKAGE.rglob("*.py"))
    for path in modules:
        where = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, call in _calls(tree):
            keywords = {k.arg: k.value for k in call.keywords}
            weights_only = keywords.get("weights_only")
            if name == "torch.load" and not (
                isinstance(weights_only, ast.Constant) and weights_only.value is True
            ):
                problems.append(f"{where}:{call.lineno} torch.load without weights_only=True")
            if name.startswith("yaml.") and name.split(".")[1] in (
                "load",
                "unsafe_load",
                "full_load",
                "load_all",
            ):
                problems.append(f"{where}:{call.lineno} {name}")
            if name in ("np.load", "numpy.load") and "allow_pickle" in keywords:
                problems.append(f"{where}:{call.lineno} {name} with allow_pickle")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in (
                "Loader",
                "UnsafeLoader",
                "FullLoader",
            ):
                problems.append(f"{where}:{node.lineno} yaml.{node.attr}")
            imported = []
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [node.module or ""]
            if {"pickle", "cloudpickle", "dill", "marshal", "shelve"} & set(imported):
                if where not in UNPICKLERS:
                    problems.append(f"{where}:{node.lineno} imports {imported}")
    assert len(modules) > 50 and problems == []


HOSTILE_TAG = "!!python/object/apply:os.system"


@pytest.mark.parametrize("where", ["document", "field"])
def test_a_profile_yaml_with_a_python_tag_is_refused_and_runs_nothing(
    tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "ran"
    data = yaml.safe_load(profile_file("jetson-nano").read_text())
    text = yaml.safe_dump({k: v for k, v in data.items() if k != "runtime"}, sort_keys=False)
    if where == "document":
        text = f"{HOSTILE_TAG} ['touch {marker}']\n"
    else:
        text += f"runtime: {HOSTILE_TAG} ['touch {marker}']\n"
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"invalid YAML.*could not determine a constructor"):
        load_profile(path)
    assert not marker.exists()


def test_profile_values_that_name_modules_import_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runtime`` and the TVM target are strings: naming an importable module imports nothing,
    in loading the profile or in an estimate made with it."""
    marker = tmp_path / "imported"
    (tmp_path / "autoprune_probe_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = yaml.safe_load(profile_file("host").read_text())
    data.update(name="probe", aliases=[], runtime="autoprune_probe_module")
    data["tvm_target"] = {**data["tvm_target"], "libs": "autoprune_probe_module"}
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(data))
    profile = load_profile(path)
    estimate_hardware(count_costs(tiny_cnn(), (1, 28, 28)), profile)
    assert profile.runtime == "autoprune_probe_module"
    assert "autoprune_probe_module" not in sys.modules and not marker.exists()


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/b", "..", ".hidden", "a\\b"])
def test_a_profile_name_is_one_folder_name(tmp_path: Path, name: str) -> None:
    """The name names ``RUN_DIR/tuning/<name>`` and the tuning cache's folder: no way out."""
    data = yaml.safe_load(profile_file("host").read_text())
    data.update(name=name, aliases=[])
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"field 'name' must be letters, digits") as error:
        load_profile(path)
    assert repr(name) in str(error.value) and len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "onnx/../../x"])
def test_an_export_format_that_is_a_path_is_refused_before_anything_is_read_or_written(
    tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(AutopruneError, match=r"unknown export format") as error:
        export_run(tmp_path / "no-run", trials=[0], formats=["onnx", name], out_dir=out)
    assert repr(name) in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_an_export_replaces_a_linked_trial_folder_without_following_it(tmp_path: Path) -> None:
    """A ``trial-NNNN`` (or its ``.old``) in the output folder that links elsewhere is replaced
    as a link: what it points to is left as it was."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    folder, partial = out / "trial-0000", out / "trial-0000.1.partial"
    folder.symlink_to(outside, target_is_directory=True)
    (out / "trial-0000.old").symlink_to(outside, target_is_directory=True)
    partial.mkdir()
    (partial / "model.pt").write_bytes(b"new")
    _replace(partial, folder)
    assert (outside / "keep.txt").read_text() == "mine" and sorted(outside.iterdir()) == [
        outside / "keep.txt"
    ]
    assert not folder.is_symlink() and (folder / "model.pt").read_bytes() == b"new"
    assert sorted(p.name for p in out.iterdir()) == ["trial-0000"]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (Linux /proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_board_listens_on_loopback_unless_an_address_is_given() -> None:
    args = build_parser().parse_args(["board", "--rpc-tracker", "h:1", "--rpc-key", "k"])
    assert args.host == "127.0.0.1"
    # The server binds before it registers with the tracker: none need be there.
    server = serve_board(("127.0.0.1", _free_port()), "security", port=_free_port())
    try:
        assert _listening_addresses(server.port) == {"127.0.0.1"}  # type: ignore[attr-defined]
    finally:
        server.terminate()  # type: ignore[attr-defined]
    assert "pass --host 0.0.0.0" in exposure_note("127.0.0.1")
    assert "no authentication" in exposure_note("127.0.0.1")
    assert "no authentication" in exposure_note("0.0.0.0")
