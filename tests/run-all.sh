#!/usr/bin/env bash
# Install everything the test suite needs on a Debian machine, then run it.
#
# Run as root on Debian 12 (bookworm): it installs Debian packages with
# apt-get (a C compiler for the stand-in manager, tmux, Prometheus tools,
# the Debian packaging tools), makes a virtual environment in .venv with the
# current PyPI releases, runs the whole suite there, then runs the fast tests
# again in .venv-floor against bookworm's library versions
# (psutil 5.9.4, structlog 22.3.0, prometheus-client 0.16.0).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-pip
  gcc libc6-dev            # compiles the stand-in cargo-tangle and instance binaries
  tmux procps util-linux iproute2 systemd
  # the uid 65534 privilege test runs Debian's python3, as the venv under /root is unreachable
  python3-psutil python3-structlog python3-prometheus-client
  prometheus prometheus-alertmanager
  prometheus-process-exporter prometheus-node-exporter   # comparison rows of bench/scan_bench.py
  # builds the .deb and installs it into a booted bookworm container
  debhelper dh-python pybuild-plugin-pyproject python3-all python3-hatchling
  lintian systemd-container debootstrap
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
else
  echo "tests/run-all.sh: not root or no apt-get; using what is installed" >&2
fi

PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/python -m pytest "$@"

# The library floor: the versions Debian bookworm ships. Only the tests that
# do not start processes or boot systemd run here; they cover every parser,
# the diagnosis, the reports and the metrics exposition.
if [ ! -x .venv-floor/bin/python ]; then
  "$PYTHON" -m venv .venv-floor
fi
.venv-floor/bin/python -m pip install --quiet 'psutil==5.9.4' 'structlog==22.3.0' 'prometheus-client==0.16.0' pytest hypothesis jsonschema
.venv-floor/bin/python -m pip install --quiet --no-deps -e .
.venv-floor/bin/python -m pytest -m "not live and not systemd" -q -p no:cacheprovider "$@"
