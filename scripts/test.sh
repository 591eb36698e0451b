#!/usr/bin/env bash
# Runs Hearth's whole test suite against the real default model, installing
# build prerequisites first. The model is pulled into $HEARTH_HOME (default
# ~/.hearth) on first use, the same place `hearth serve` keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace --locked "$@"
