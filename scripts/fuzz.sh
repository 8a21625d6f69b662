#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ one after the other, each for a given time, on nightly
# Rust (libFuzzer needs it). Not part of CI: the stable `cargo test -p fuzz-checks` replays the
# seeds instead.
#
#   scripts/fuzz.sh [-t SECONDS] [TARGET...]
#
# -t: time per target in seconds (default 300). With no TARGET, every target in
# fuzz/fuzz_targets/. New inputs go to fuzz/corpus/<target>/ (created here), the seeds in
# fuzz/seeds/<target>/ are read only. A crash is written to fuzz/artifacts/<target>/ and the
# script exits 1 after the remaining targets have run; add the crash file to the seeds once the
# parser is fixed. Needs `cargo install cargo-fuzz` and `rustup toolchain install nightly`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=300
while getopts "t:h" opt; do
    case "$opt" in
        t) seconds="$OPTARG" ;;
        *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

# Per-target libFuzzer options: a dictionary where the input is a text format, and an input
# size that reaches the parser's limits (libFuzzer's default cap is 4 KiB).
options() {
    case "$1" in
        shadow_document) echo "-dict=fuzz/dicts/shadow.dict -max_len=16384" ;;
        iot_policy) echo "-dict=fuzz/dicts/iot_policy.dict -max_len=4096" ;;
        iot_sql) echo "-dict=fuzz/dicts/iot_sql.dict -max_len=4096" ;;
        recipe) echo "-dict=fuzz/dicts/recipe.dict -max_len=8192" ;;
        http_body) echo "-dict=fuzz/dicts/http_body.dict -max_len=8192" ;;
        ipc_frame) echo "-dict=fuzz/dicts/ipc_frame.dict -max_len=8192" ;;
        mqtt_packet) echo "-max_len=8192" ;;
        mqtt5_packet) echo "-max_len=8192" ;;
        jobs_request) echo "-dict=fuzz/dicts/jobs.dict -max_len=4096" ;;
        modbus_response) echo "-max_len=1024" ;;
        *) echo "" ;;
    esac
}

failed=()
for t in "${targets[@]}"; do
    if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
        echo "fuzz.sh: no target $t (see fuzz/fuzz_targets/)" >&2
        exit 2
    fi
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    echo "==> $t for ${seconds}s"
    # shellcheck disable=SC2046 # the options are words on purpose
    if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 $(options "$t"); then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]}"
