#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang, ASan and UBSan in
# build-fuzz/, replays the committed reproducers (tests/fuzz/crashes/: each
# must now pass), then fuzzes every target for FUZZ_SECONDS (default 60) from
# its seed corpus, all targets at once. Fails on any crash, leak, sanitizer
# report, timeout or allocation over FUZZ_MALLOC_MB (a forged size).
#   bash .ci/fuzz.sh [target...]      # targets: idx safetensors png jpeg
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-60}"
MALLOC_MB="${FUZZ_MALLOC_MB:-512}"
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(idx safetensors png jpeg)

# The library gets coverage instrumentation too (fuzzer-no-link), or libFuzzer
# would only see the harness. -Wno-pass-failed: the sanitizers' checks stop
# clang vectorizing the `omp simd` loops, which it reports as a warning.
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Dwerror=true -Dcuda=disabled \
        -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
        "-Dc_args=-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -Wno-pass-failed" >/dev/null
fi
# (the compiler's errors go to ninja's standard output: shown when it fails)
ninja -C build-fuzz $(for t in "${TARGETS[@]}"; do echo "tests/fuzz/fuzz_$t"; done) >build-fuzz/ninja.log 2>&1 ||
    { grep -A8 -m3 FAILED build-fuzz/ninja.log; exit 1; }

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
opts=(-rss_limit_mb=2048 -malloc_limit_mb="$MALLOC_MB" -timeout=30)
fail=0

# 1. the reproducers of bugs found before: named <target>-<what>
for t in "${TARGETS[@]}"; do
    for f in tests/fuzz/crashes/"$t"-*; do
        [ -f "$f" ] || continue
        if ./build-fuzz/tests/fuzz/fuzz_"$t" "${opts[@]}" "$f" >"$work/replay.log" 2>&1; then
            echo "fuzz replay $f: ok"
        else
            echo "fuzz replay $f: FAILED"
            grep -E "^fuzz:|ERROR|SUMMARY|runtime error" "$work/replay.log" | head -5 | sed 's/^/    /'
            fail=1
        fi
    done
done

# 2. fuzzing: every target at once, new inputs in a scratch corpus
pids=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$work/$t" "$work/artifacts"
    ./build-fuzz/tests/fuzz/fuzz_"$t" "${opts[@]}" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$t-" "$work/$t" tests/fuzz/corpus/"$t" >"$work/$t.log" 2>&1 &
    pids+=($!)
done
for i in "${!TARGETS[@]}"; do
    t=${TARGETS[$i]}
    if wait "${pids[$i]}"; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo "?")
        cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -n 1 || true)
        echo "fuzz $t: ok ($runs inputs in ${SECONDS_EACH} s, $cov)"
    else
        echo "fuzz $t: FAILED"
        grep -E -A12 "^fuzz:|ERROR:|runtime error" "$work/$t.log" | head -40 | sed 's/^/    /'
        mkdir -p tests/fuzz/crashes
        for a in "$work"/artifacts/"$t"-*; do
            [ -f "$a" ] || continue
            cp "$a" tests/fuzz/crashes/
            echo "    reproducer: tests/fuzz/crashes/$(basename "$a")"
        done
        fail=1
    fi
done
exit $fail
