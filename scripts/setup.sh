#!/usr/bin/env bash
# Install everything tidal needs on a fresh Debian 12 machine: system packages (apt) and the
# project's virtual environment (.venv). Idempotent: a stamp file makes a re-run a quick no-op
# unless requirements.txt or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH="torch==2.13.0"
APT_PKGS=(python3-venv python3-dev build-essential perl iverilog liblz4-dev zlib1g-dev)
STAMP=.venv/.tidal-setup
want=$(cat requirements.txt scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    $PY -m venv .venv
fi
.venv/bin/python -m pip install -q -U pip
# torch first and alone: its CPU build is pinned exactly.
.venv/bin/python -m pip install -q "$TORCH"
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "setup: done"
