#!/usr/bin/env bash
# Installs the official Python API clients the tests drive Hearth with, in a
# virtual environment under target/ (so `cargo clean` removes it):
#   scripts/pyclients.sh        -> prints the environment's python
# Versions are pinned so a client release cannot change a test's outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyclients
want="openai==3.57.0 anthropic==2.16.0 ollama==0.6.3 jsonschema==4.26.0"
if [[ ! -x $venv/bin/python ]] || [[ "$(cat $venv/.installed 2>/dev/null)" != "$want" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086 # one word per package
    # A registry answer cut short (seen in CI: a truncated JSON index) is
    # worth another try before a test fails on it.
    for try in 1 2 3; do
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want >&2 && break
        [[ $try == 3 ]] && exit 1
        sleep 5
    done
    echo "$want" > "$venv/.installed"
fi
echo "$PWD/$venv/bin/python"
