#!/usr/bin/env bash
# Installs what the README's commands need, on Debian or Ubuntu with Python 3.11+:
# a virtual environment in .venv with requirements-dev.txt, and the real
# Fashion-MNIST from the OS package dataset-fashion-mnist where it is missing.
# Safe to rerun: it only adds what is not there yet.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { $SUDO apt-get update -qq; apt_updated=1; }
  $SUDO apt-get install -y -qq "$@"
}

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv  # Ubuntu ships venv without ensurepip until python3-venv is installed
    apt_install "python3-venv" || apt_install "python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    "$PYTHON" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist
fi
echo "setup done: .venv ready, Fashion-MNIST in /usr/share/datasets/fashion-mnist"
