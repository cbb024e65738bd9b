#!/bin/sh
# Run every libFuzzer harness (executables named fuzz_*) found in
# BUILD_DIR/tests/fuzz for SECONDS each and report in TAP; with NAMEs, only
# the harnesses fuzz_NAME.
#
#   tests/fuzz/run-fuzz.sh BUILD_DIR SECONDS [NAME...]
#
# Harness fuzz_NAME starts from a copy of the seed corpus
# tests/fuzz/corpus/NAME/ (the repository is never modified) and uses the
# dictionary tests/fuzz/NAME.dict when there is one. A crashing input is
# kept in BUILD_DIR/tests/fuzz/artifacts/. With FUZZ_RUNS=N in the
# environment each harness also stops after N executions, when that comes
# first. Exits non-zero when a harness crashed, leaked, timed out or could
# not run.
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS [NAME...]" >&2
    exit 2
fi
build_dir=$1
seconds=$2
shift 2
only=" $* "
case $seconds in
'' | *[!0-9]*)
    echo "$0: SECONDS must be a whole number, got '$seconds'" >&2
    exit 2
    ;;
esac

src_dir=$(cd "$(dirname "$0")" && pwd)
fuzz_dir=$build_dir/tests/fuzz
artifacts=$fuzz_dir/artifacts
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT
trap 'exit 130' HUP INT TERM

n=0
failed=0
for harness in "$fuzz_dir"/fuzz_*; do
    if [ ! -f "$harness" ] || [ ! -x "$harness" ]; then
        continue
    fi
    name=$(basename "$harness")
    if [ "$only" != "  " ] && [ "${only#* "${name#fuzz_}" }" = "$only" ]; then
        continue
    fi
    n=$((n + 1))
    corpus=$work/corpus-$name
    mkdir -p "$corpus" "$artifacts"
    seeds=$src_dir/corpus/${name#fuzz_}
    if [ -d "$seeds" ]; then
        cp "$seeds"/* "$corpus"/ 2>/dev/null
    fi
    set -- -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/$name-"
    if [ -n "${FUZZ_RUNS:-}" ]; then
        set -- "$@" -runs="$FUZZ_RUNS"
    fi
    if [ -f "$src_dir/${name#fuzz_}.dict" ]; then
        set -- "$@" -dict="$src_dir/${name#fuzz_}.dict"
    fi
    log=$work/$name.log
    "$harness" "$@" "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    took=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        echo "ok $n - $name ran up to ${seconds}s, ${execs:-0} execs (${took:-?}/s; ${cov:-no stats}), no crash"
    else
        failed=$((failed + 1))
        echo "not ok $n - $name exited with $rc after ${execs:-?} execs (artifacts in $artifacts)"
        grep -E 'ERROR|SUMMARY|invariant|Test unit written|^==' "$log" | head -n 20 | sed 's/^/# /'
    fi
done

if [ "$n" -eq 0 ]; then
    echo "1..0 # SKIP no fuzz_* executables in $fuzz_dir (configure CC=clang --enable-fuzzing)"
    exit 0
fi
echo "1..$n"
[ "$failed" -eq 0 ]
