#!/usr/bin/env bash
# Install the bot with its test dependencies into .venv, run the cheap gates (ruff, mypy; a
# finding fails the run), then the whole test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
