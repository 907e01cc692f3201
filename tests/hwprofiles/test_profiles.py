"""Registry and validation of the device profiles (YAML data)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from autoprune.errors import AutopruneError, ConfigError, UnknownNameError
from autoprune.hwprofiles import PROFILE_DIR, DeviceProfile, list_profiles, load_profile

PROFILES = list_profiles()
PROFILE_IDS = [p.name for p in PROFILES]
REQUIRED = {"jetson-orin-nano", "jetson-nano", "raspberry-pi-4", "host"}


def _orin_nano_data() -> dict:
    return yaml.safe_load((PROFILE_DIR / "jetson-orin-nano.yaml").read_text())


def _write(tmp_path: Path, data: object, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_registry_has_the_required_profiles_sorted_by_name() -> None:
    assert REQUIRED <= set(PROFILE_IDS)
    assert PROFILE_IDS == sorted(PROFILE_IDS)
    assert len(set(PROFILE_IDS)) == len(PROFILE_IDS)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("jetson-orin-nano", "jetson-orin-nano"),
        ("jetson", "jetson-orin-nano"),
        ("JETSON", "jetson-orin-nano"),
        (" Jetson-Nano ", "jetson-nano"),
        ("rpi4", "raspberry-pi-4"),
        ("host", "host"),
    ],
)
def test_load_by_name_or_alias_case_insensitive(key: str, expected: str) -> None:
    assert load_profile(key).name == expected


def test_load_from_a_user_yaml_path(tmp_path: Path) -> None:
    data = _orin_nano_data()
    data.update(name="my-board", aliases=[], compute_efficiency=0.5)
    path = _write(tmp_path, data, "my-board.yaml")
    for arg in (path, str(path)):
        profile = load_profile(arg)
        assert profile.name == "my-board"
        assert dict(profile.compute_efficiency) == dict.fromkeys(profile.native_precisions, 0.5)
        assert profile.peak_macs_per_s == load_profile("jetson").peak_macs_per_s


def test_unknown_name_lists_the_valid_names_and_aliases() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_profile("jetsn")
    err = info.value
    assert isinstance(err, AutopruneError) and isinstance(err, KeyError)
    assert err.kind == "target" and err.name == "jetsn"
    assert {"jetson-orin-nano", "jetson", "jetson-nano", "host", "raspberry-pi-4"} <= set(err.valid)
    message = str(err)
    assert "'jetsn'" in message and "jetson-orin-nano" in message and "rpi4" in message
    assert "\n" not in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml.*does not exist"):
        load_profile(str(missing))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("memory_bandwidth_bytes_per_s"), "memory_bandwidth_bytes_per_s"),
        (lambda d: d.update(memory_bandwith_bytes_per_s=1.0), "memory_bandwith_bytes_per_s"),
        (lambda d: d.update(kind="npu"), "kind"),
        (lambda d: d.update(compute_efficiency="fast"), "compute_efficiency"),
        (lambda d: d.update(compute_efficiency=1.5), "compute_efficiency"),
        (lambda d: d.update(channel_multiple=2.5), "channel_multiple"),
        (lambda d: d.update(channel_multiple=True), "channel_multiple"),
        (lambda d: d.update(native_precisions=["fp32", "bf16"]), "native_precisions"),
        (lambda d: d["peak_macs_per_s"].pop("int8"), "peak_macs_per_s"),
        (lambda d: d["peak_macs_per_s"].update(fp16=-1.0), "peak_macs_per_s.fp16"),
        (lambda d: d.update(bit_widths=[0, 8]), "bit_widths"),
        (lambda d: d.update(sources=[]), "sources"),
        (lambda d: d.update(tvm_target=7), "tvm_target"),
        (lambda d: d.update(idle_power_w=99.0), "idle_power_w"),
        (
            lambda d: d.update(kernel_class_aliases={"pointwise": "winograd"}),
            "kernel_class_aliases",
        ),
        (
            lambda d: d.update(kernel_class_aliases={"pointwise": "fc", "fc": "conv3x3"}),
            "kernel_class_aliases",
        ),
        (
            lambda d: d.update(kernel_class_efficiency={"pointwise": 2.0}),
            "kernel_class_efficiency",
        ),
    ],
)
def test_bad_field_is_a_config_error_naming_file_and_field(tmp_path, edit, field) -> None:
    data = _orin_nano_data()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message
    assert f"'{field}'" in message
    assert "\n" not in message


def test_an_aliased_kernel_class_takes_its_targets_factor_and_has_none_of_its_own() -> None:
    profile = load_profile("jetson", calibrated=False)
    assert profile.kernel_class_aliases == {"pointwise": "conv3x3"}
    tuned = dataclasses.replace(profile, kernel_class_efficiency={"conv3x3": 2.0, "fc": 0.5})
    assert tuned.class_factor("pointwise") == tuned.class_factor("conv3x3") == 2.0
    assert tuned.class_factor("fc") == 0.5 and tuned.class_factor("depthwise") == 1.0
    assert tuned.efficiency("fp16", "pointwise") == 2.0 * tuned.compute_efficiency["fp16"]
    assert "kernel_class_efficiency.pointwise" not in tuned.factor_keys()
    assert "kernel_class_efficiency.pointwise" in load_profile("jetson-nano").factor_keys()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\nkind: gpu\n", r"invalid YAML at line \d+"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "must be a mapping"),
    ],
)
def test_malformed_yaml_is_a_config_error(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_numeric_strings_from_yaml_exponent_quirk_are_accepted(tmp_path: Path) -> None:
    # PyYAML reads 6.4e11 (no exponent sign) as a string; the profile loader accepts it.
    text = (PROFILE_DIR / "jetson-orin-nano.yaml").read_text()
    text = text.replace("fp32: 6.4e+11", "fp32: 6.4e11").replace(
        "name: jetson-orin-nano", "name: x"
    )
    assert "6.4e11" in text
    assert load_profile(_write(tmp_path, text)).peak_macs_per_s["fp32"] == 6.4e11


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_every_profile_is_complete_and_consistent(profile: DeviceProfile) -> None:
    assert (PROFILE_DIR / f"{profile.name}.yaml").is_file()
    assert profile.kind in ("cpu", "gpu")
    assert profile.tvm_target
    assert profile.sources and all(s.strip() for s in profile.sources)
    assert profile.native_precisions and set(profile.peak_macs_per_s) == set(
        profile.native_precisions
    )
    assert all(v > 0 for v in profile.peak_macs_per_s.values())
    assert profile.memory_bandwidth_bytes_per_s > 0
    assert all(0 < e <= 1 for e in profile.compute_efficiency.values())
    assert 0 < profile.memory_efficiency <= 1
    assert 0 <= profile.idle_power_w <= profile.max_power_w
    assert profile.energy_scale > 0 and profile.channel_multiple >= 1
    assert 32 in profile.bit_widths
    # Narrower native precisions are never slower than wider ones.
    peaks = [profile.peak_macs_per_s[p] for p in profile.native_precisions]
    assert peaks == sorted(peaks)


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_profile_round_trips_through_json(profile: DeviceProfile) -> None:
    again = DeviceProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile
    assert hash(again) == hash(profile)


def test_profile_is_immutable() -> None:
    profile = load_profile("jetson")
    with pytest.raises(AttributeError):
        profile.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        profile.peak_macs_per_s["fp32"] = 1.0  # type: ignore[index]
    spec = load_profile("jetson-xavier-nx").tvm_target_spec()
    assert isinstance(spec, dict)
    spec["host"]["num-cores"] = 99  # a copy: the profile is unchanged
    assert load_profile("jetson-xavier-nx").tvm_target_spec()["host"]["num-cores"] == 6


def test_jetson_precisions_match_the_hardware() -> None:
    assert "int8" not in load_profile("jetson-nano").native_precisions  # no fast INT8 on sm_53
    assert load_profile("jetson-orin-nano").native_precisions == ("fp32", "fp16", "int8")
    assert "fp16" not in load_profile("raspberry-pi-4").native_precisions  # A72: no FP16 math


def test_tvm_targets_exist_in_tvm() -> None:
    import tvm  # import costs a few seconds: keep it in this one test

    tags = set(tvm.target.list_tags())
    for profile in PROFILES:
        spec = profile.tvm_target_spec()
        if isinstance(spec, str) and spec != "llvm":
            assert spec in tags, f"{profile.name}: TVM has no tag {spec!r}"
        target = tvm.target.Target(spec)
        assert target.kind.name == ("cuda" if profile.kind == "gpu" else "llvm"), profile.name
