#!/bin/bash
# `make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="mqtt-connect ..."]`: builds the libFuzzer binary
# (coverage-guided, with AddressSanitizer) in .build/fuzz and runs each target for FUZZ_SECONDS,
# starting from its corpus in Tests/Fuzz/Corpus/TARGET. Inputs that reach new code are merged
# into that corpus (commit them); a crash, hang or leak is written to
# Tests/Fuzz/Regressions/TARGET/ (commit it too, with the fix: `make test` replays both).
# Prints executions, coverage and corpus size per target, also kept in .build/fuzz/report.md.
set -uo pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-60}
all_targets=(mqtt-connect mqtt-packets proxy-header ocsp-http ocsp-verify config-yaml control-http admin-http)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
    if [[ ! " ${all_targets[*]} " =~ " $target " ]]; then
        echo "make fuzz: no target '$target'; the targets are: ${all_targets[*]}" >&2
        exit 2
    fi
done

# The sanitizers bring their own allocator, so the binary links glibc's malloc, not mimalloc.
echo "building the fuzz binary (AddressSanitizer + libFuzzer) in .build/fuzz ..."
if ! STAPLEGATE_FUZZ=1 STAPLEGATE_MALLOC=system swift build --scratch-path .build/fuzz --product staplegate-fuzz \
        -Xswiftc -sanitize=fuzzer,address > .build/fuzz-build.log 2>&1; then
    tail -40 .build/fuzz-build.log >&2
    echo "make fuzz: the build failed (whole log: .build/fuzz-build.log)" >&2
    exit 1
fi
binary=.build/fuzz/debug/staplegate-fuzz
report=.build/fuzz/report.md
printf '| target | seconds | executions | exec/s | coverage (edges) | features | corpus files | crashes |\n|---|---:|---:|---:|---:|---:|---:|---:|\n' > "$report"

failed=()
for target in "${targets[@]}"; do
    corpus=Tests/Fuzz/Corpus/$target
    crashes=Tests/Fuzz/Regressions/$target
    mkdir -p "$corpus" "$crashes"
    found=$(mktemp -d)
    log=.build/fuzz/$target.log
    before=$(ls "$crashes" | wc -l)
    echo "fuzzing $target for $seconds s ..."
    # New inputs go to the first folder (a scratch one); the repository corpus is only read here.
    # -timeout: one input taking 10 s is a hang. -rss_limit_mb: memory that grows with the input.
    # -max_len: larger inputs add little coverage here and would swell the corpus in the repository.
    STAPLEGATE_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=1 SWIFT_BACKTRACE=enable=no "$binary" -max_total_time="$seconds" -timeout=10 \
        -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$crashes/" "$found" "$corpus" > "$log" 2>&1
    status=$?
    # Keep what adds coverage, minimised against what the corpus already has.
    STAPLEGATE_FUZZ_TARGET=$target "$binary" -merge=1 "$corpus" "$found" > "$log.merge" 2>&1
    rm -rf "$found"
    executions=$(grep -oE 'stat::number_of_executed_units:[[:space:]]*[0-9]+' "$log" | awk '{print $2}')
    speed=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]*[0-9]+' "$log" | awk '{print $2}')
    coverage=$(grep -oE '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+)/\1 \2/')
    files=$(ls "$corpus" | wc -l)
    new_crashes=$(( $(ls "$crashes" | wc -l) - before ))
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$seconds" "${executions:-?}" "${speed:-?}" \
        "${coverage% *}" "${coverage#* }" "$files" "$new_crashes" >> "$report"
    if [ $status -ne 0 ] || [ $new_crashes -gt 0 ]; then
        failed+=("$target")
        echo "  $target: libFuzzer stopped with status $status; the input is in $crashes/ and the log in $log" >&2
        grep -E 'ERROR|fuzz invariant|Fatal error|SUMMARY' "$log" | head -5 >&2
    fi
done

cat "$report"
if [ ${#failed[@]} -gt 0 ]; then
    echo "make fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
