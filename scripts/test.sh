#!/usr/bin/env bash
# The project's test command: formatting, lints, every Rust test, the
# conformance tests that drive the local cloud and the simulated core with AWS's
# own clients (boto3 and awsiotsdk in Python, the Rust Greengrass component SDK),
# and the ML training pipeline (cloud/training).
# Needs: the Rust toolchain (rustup), a C compiler, python3 (3.11+) with venv, and
# libclang (Debian/Ubuntu: libclang-dev) for the component SDK's bindgen step.
# Installs the Python packages it needs into target/venv (from PyPI) the first
# time, and libclang-dev with apt-get when it is missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# One build for everything that follows: the Rust tests and the binaries the Python steps start
# come from the same `--workspace --all-targets` selection, so features unify once and nothing
# is compiled twice (a `-p` selection would unify other features and rebuild much of the tree).
step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets --locked

step "cargo test"
cargo test --workspace --locked

step "python conformance environment (target/venv)"
scripts/python-env.sh
VENV=target/venv

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --locked | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export LOCAL_CLOUD_BIN="$TARGET_DIR/debug/local-cloud"
export DEVICE_SIM_BIN="$TARGET_DIR/debug/device-sim"
export PUMP_ANALYZER_BIN="$TARGET_DIR/debug/pump-analyzer"

# libclang where bindgen (through clang-sys) looks for it: LIBCLANG_PATH, LLVM's
# and the system's library directories (libclang.so, libclang-N.so, libclang.so.N).
# Globs only: a pipe into `grep -q` could fail under pipefail.
have_libclang() {
    local f
    for f in ${LIBCLANG_PATH:+"$LIBCLANG_PATH"/libclang*.so*} \
        /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
        /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so* /usr/lib64/libclang.so* /usr/local/lib/libclang.so*; do
        [ -e "$f" ] && return 0
    done
    return 1
}

step "libclang for AWS's Greengrass component SDK (bindgen)"
if have_libclang; then
    echo "libclang found"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    echo "installing libclang-dev with apt-get"
    # Refresh the package lists only when the install fails without it.
    if ! apt-get install -y -qq libclang-dev >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq libclang-dev >/dev/null
    fi
    have_libclang || { echo "libclang-dev is installed but libclang was not found; set LIBCLANG_PATH to the directory of libclang.so" >&2; exit 1; }
else
    cat >&2 <<'MSG'
error: libclang is missing. The conformance test with AWS's Rust Greengrass
component SDK (aws-greengrass-component-sdk) generates its C bindings with
bindgen, which loads libclang. Install it and run this command again:
  Debian/Ubuntu:  sudo apt-get install libclang-dev
  Fedora/RHEL:    sudo dnf install clang-devel
  Alpine:         apk add clang-dev
  macOS:          brew install llvm   (then export LIBCLANG_PATH="$(brew --prefix llvm)/lib")
or point LIBCLANG_PATH at the directory that holds libclang.so.
MSG
    exit 1
fi

# The SDK component is its own cargo workspace (the main one never needs
# libclang); it shares the target directory, debug profile.
GG_SDK_CLIENT=tests/conformance/components/gg-sdk-client/Cargo.toml
step "build the component on AWS's Rust Greengrass component SDK"
cargo fmt --manifest-path "$GG_SDK_CLIENT" --check
CARGO_TARGET_DIR="$TARGET_DIR" cargo clippy --manifest-path "$GG_SDK_CLIENT" --all-targets --locked -- -D warnings
CARGO_TARGET_DIR="$TARGET_DIR" cargo build --manifest-path "$GG_SDK_CLIENT" --locked
export GG_SDK_CLIENT_BIN="$TARGET_DIR/debug/gg-sdk-client"

step "conformance tests with AWS's official clients (awsiotsdk, boto3, Greengrass component SDK)"
"$VENV/bin/python" -m pytest -q tests/conformance

# A small dataset from the built device-sim, train.py end to end, the ONNX export checked
# with onnxruntime and loaded by the analyzer's tract (`pump-analyzer verify-model`), and
# launch.py's SageMaker request checked against botocore's model.
step "ML pipeline: dataset, SageMaker-style training, ONNX export (cloud/training)"
"$VENV/bin/python" -m pytest -q cloud/training/tests
