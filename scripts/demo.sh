#!/usr/bin/env bash
# Sets up the hub in a virtualenv and runs `hub demo` with the shipped hub.toml (SQLite, loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
exec .venv/bin/hub demo --config hub.toml "$@"
