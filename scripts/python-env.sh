#!/usr/bin/env bash
# Creates target/venv with the pinned packages of tests/conformance/requirements.txt (AWS's
# official clients) and cloud/training/requirements.txt (model training and ONNX export).
# Re-running is cheap: it only installs when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/venv
REQS=(tests/conformance/requirements.txt cloud/training/requirements.txt)
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3 with the venv module is needed (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
WANT=$(cat "${REQS[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    # One resolution for both files, so a shared dependency gets one version.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQS[@]/#/-r}"
    echo "$WANT" > "$STAMP"
fi
