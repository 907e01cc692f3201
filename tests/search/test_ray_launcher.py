"""The cluster launcher YAML passes Ray's own validation (what `ray up` runs on it), installs what
the driver runs, and the README's recipe gives its commands in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).parents[2]
LAUNCHER = ROOT / "configs" / "ray" / "aws-gpu.yaml"


def test_the_launcher_yaml_validates_against_rays_schema() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    validate_config(prepare_config(config))  # `ray up`'s checks: schema, node types, workers
    broken = {**config, "head_node_typ": config["head_node_type"]}
    with pytest.raises(Exception, match="head_node_typ"):
        validate_config(prepare_config(broken))


def test_the_launcher_installs_the_drivers_pinned_packages() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    setup = " ".join(config["setup_commands"])
    pins = re.findall(r'"(\w+(?:\[\w+\])?==[\d.]+)"', (ROOT / "pyproject.toml").read_text())
    ray_pin = next(p for p in pins if p.startswith("ray["))
    assert ray_pin.split("==")[1] in setup and "torch==2.14.1" in setup
    assert "$HOME/autoprune" in setup and config["file_mounts"] == {"~/autoprune": "."}
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] >= 1  # a trial asking for a GPU fits the cluster at start


def test_the_readme_recipe_gives_every_command_in_order() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## A Ray cluster") :]
    steps = [
        'pip install "ray[default]',
        "aws configure",
        "ray up configs/ray/aws-gpu.yaml",
        "autoprune search --config",
        "--ray-address auto",
        "ray attach configs/ray/aws-gpu.yaml",
        "autoprune report",
        "ray rsync-down configs/ray/aws-gpu.yaml",
        "ray down configs/ray/aws-gpu.yaml",
    ]
    positions = [section.index(step) for step in steps]
    assert positions == sorted(positions)
