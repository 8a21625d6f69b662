#!/usr/bin/env bash
# The project's test command: formatting, lints, every Rust test, the
# conformance tests that drive the local cloud and the simulated core with AWS's
# own clients (boto3 and awsiotsdk in Python, the Rust Greengrass component SDK),
# and the ML training pipeline (cloud/training).
# Needs: the Rust toolchain (rustup), a C compiler, python3 (3.11+) with venv,
# libclang (Debian/Ubuntu: libclang-dev) for the component SDK's bindgen step, and
# SoftHSM2 (Debian/Ubuntu: softhsm2), the PKCS#11 token of the key-storage tests,
# and Chromium with its WebDriver (Debian: chromium, chromium-driver) for the
# dashboard's browser tests.
# Installs the Python packages it needs into target/venv (from PyPI) the first
# time, and libclang-dev, softhsm2, chromium and chromium-driver with apt-get when
# they are missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# A CI run builds once from a clean clone: incremental compilation only costs time and disk there.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

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

# Installs a Debian package with apt-get, refreshing the package lists only when the install
# fails without it; true when it ran (as root, with apt-get), false when it could not.
apt_install() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    export DEBIAN_FRONTEND=noninteractive
    echo "installing $1 with apt-get"
    if ! apt-get install -y -qq "$1" >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq "$1" >/dev/null
    fi
}

# SoftHSM2: its tool and its PKCS#11 library where Debian, Ubuntu and Fedora put it (the same
# list as device-sim's key_store::softhsm).
have_softhsm() {
    local f
    command -v softhsm2-util >/dev/null || return 1
    for f in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so; do
        [ -e "$f" ] && return 0
    done
    return 1
}

step "SoftHSM2 for the PKCS#11 key-storage tests"
if have_softhsm; then
    echo "SoftHSM2 found"
elif apt_install softhsm2; then
    have_softhsm || { echo "softhsm2 is installed but softhsm2-util or libsofthsm2.so was not found" >&2; exit 1; }
else
    cat >&2 <<'MSG'
error: SoftHSM2 is missing. The tests of the core's PKCS#11 key storage keep its
private key in a SoftHSM2 token. Install it and run this command again:
  Debian/Ubuntu:  sudo apt-get install softhsm2
  Fedora/RHEL:    sudo dnf install softhsm
MSG
    exit 1
fi

step "cargo test"
cargo test --workspace --locked

step "python conformance environment (target/venv)"
scripts/python-env.sh
VENV=target/venv

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --locked | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export LOCAL_CLOUD_BIN="$TARGET_DIR/debug/local-cloud"
export DEVICE_SIM_BIN="$TARGET_DIR/debug/device-sim"
export PUMP_ANALYZER_BIN="$TARGET_DIR/debug/pump-analyzer"
export PROVISION_BIN="$TARGET_DIR/debug/provision"

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
elif apt_install libclang-dev; then
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

step "Chromium and its WebDriver for the dashboard's browser tests"
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "chromium and chromedriver found"
elif apt_install chromium && apt_install chromium-driver; then
    command -v chromedriver >/dev/null || { echo "chromium-driver is installed but chromedriver is not on PATH" >&2; exit 1; }
else
    cat >&2 <<'MSG'
error: Chromium or its WebDriver is missing. The dashboard's browser tests
(tests/conformance/test_dashboard.py) drive a headless Chromium with Selenium.
Install them and run this command again:
  Debian:  sudo apt-get install chromium chromium-driver
  Ubuntu:  sudo apt-get install chromium-browser chromium-chromedriver
MSG
    exit 1
fi

step "conformance tests with AWS's official clients (awsiotsdk, boto3, Greengrass component SDK)"
"$VENV/bin/python" -m pytest -q tests/conformance

# A small dataset from the built device-sim, train.py end to end, the ONNX export checked
# with onnxruntime and loaded by the analyzer's tract (`pump-analyzer verify-model`), and
# launch.py's SageMaker request checked against botocore's model; the retraining pipeline
# (pipeline.py) from a fleet's data in the local cloud, its gate, registry and SageMaker requests.
step "ML pipeline: dataset, SageMaker-style training, ONNX export (cloud/training)"
"$VENV/bin/python" -m pytest -q cloud/training/tests
