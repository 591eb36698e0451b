#!/usr/bin/env bash
# Installs build prerequisites, builds Hearth in release mode and serves the
# default model (pulled on first use) on http://127.0.0.1:8080.
# Extra arguments go to `hearth serve`, e.g. `scripts/serve.sh --port 9000`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p hearth
exec target/release/hearth serve "$@"
