"""A wheel of autoprune, installed into a fresh virtual environment outside the checkout, works
with the configs and device profiles it ships."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_outside_the_checkout_with_its_default_config(tmp_path: Path) -> None:
    # Build from a copy of the sources, so that the checkout gets no build/ or egg-info.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "autoprune", source / "autoprune", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, source, cwd=tmp_path)
    (wheel,) = dist.glob("autoprune-*.whl")
    shipped = zipfile.ZipFile(wheel).namelist()
    assert "autoprune/configs/default.yaml" in shipped
    assert "autoprune/hwprofiles/profiles/jetson-orin-nano.yaml" in shipped

    # A fresh environment; its dependencies (torch and the rest, gigabytes) are this
    # environment's, reached through a .pth file, and autoprune itself is only the wheel's.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).strip()
    )
    deps = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    (purelib / "autoprune-test-dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = run(python, "-c", "import autoprune.config as c; print(c.DEFAULT_CONFIG)", cwd=outside)
    default = Path(where.strip())
    assert default.is_file() and default.is_relative_to(purelib)
    autoprune = venv / "bin" / "autoprune"
    targets = run(autoprune, "targets", cwd=outside)
    assert "jetson-orin-nano" in targets and "raspberry-pi-4" in targets
    help_text = run(autoprune, "search", "--help", cwd=outside)
    assert str(default) in "".join(help_text.split())  # the packaged default (help wraps it)
    assert "nsga2" in help_text and "scratch-e" in help_text
