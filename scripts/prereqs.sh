#!/usr/bin/env bash
# Installs what building Hearth needs on Debian/Ubuntu, if missing:
# cmake and a C/C++ compiler for llama.cpp, clang + libclang for bindgen,
# python3 with pip for fetching package-hosted models (and venv, for the
# official API clients the tests use), and Prometheus, which
# the metrics test runs for real (its absence skips that test, loudly).
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v clang >/dev/null || need+=(clang)
command -v c++ >/dev/null || need+=(g++)
command -v git >/dev/null || need+=(git)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
# bench/ scripts read each run's CPU time from time(1).
[[ -x /usr/bin/time ]] || need+=(time)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# The official Python API clients the tests drive Hearth with live in a venv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v prometheus >/dev/null || [[ -x /usr/bin/prometheus ]] || need+=(prometheus)
if ((${#need[@]})); then
    echo "installing: ${need[*]}" >&2
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    echo "Rust is not installed: install it with rustup (https://rustup.rs), then run this again." >&2
    exit 1
fi
