#!/usr/bin/env bash
# Installs moto (a real S3-compatible server, in its server mode) in a
# virtual environment under target/, for the object storage tests:
#   scripts/s3server.sh        -> prints the path of its moto_server
# Pinned, so a release cannot change a test's outcome; serialised with a
# lock, as test binaries may ask at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
exec 9>target/s3server.lock
flock 9
venv=target/s3server
want="moto[server]==5.2.5"
if [[ ! -x $venv/bin/moto_server ]] || [[ "$(cat $venv/.installed 2>/dev/null)" != "$want" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # A registry answer cut short (seen in CI: a truncated JSON index) is
    # worth another try before a test fails on it.
    for try in 1 2 3; do
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$want" >&2 && break
        [[ $try == 3 ]] && exit 1
        sleep 5
    done
    echo "$want" > "$venv/.installed"
fi
echo "$PWD/$venv/bin/moto_server"
