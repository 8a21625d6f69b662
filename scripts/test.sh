#!/usr/bin/env bash
# The project's test command: formatting, lints, every Rust test, and the
# conformance tests that drive the local cloud with AWS's own Python clients.
# Needs: the Rust toolchain (rustup), python3 (3.9+) with venv. Installs the
# Python packages it needs into target/venv (from PyPI) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "python conformance environment (target/venv)"
scripts/python-env.sh
VENV=target/venv

step "build the local cloud for the conformance tests"
cargo build -p local-cloud --locked
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --locked | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export LOCAL_CLOUD_BIN="$TARGET_DIR/debug/local-cloud"

step "conformance tests with AWS's official clients (awsiotsdk, boto3)"
"$VENV/bin/python" -m pytest -q tests/conformance
