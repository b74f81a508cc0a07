# Sourced by the bench scripts: `measure LABEL COMMAND...` runs COMMAND under /usr/bin/time -v
# (a program, not a shell function) and prints LABEL, tokens/s (otpref's progress line at its
# last step, or the "tokens_per_s" of a TRL script's JSON), the whole process's peak resident
# memory and its wall time. Needs $work, a scratch folder; COMMAND writes under $work/run.
measure() {
    local label=$1; shift
    rm -rf "$work/run"
    /usr/bin/time -v "$@" > "$work/log" 2>&1 || { tail -5 "$work/log"; exit 1; }
    local rate peak wall
    rate=$(grep -oE '[0-9.]+ tok/s' "$work/log" | tail -1 | cut -d' ' -f1 || true)
    [ -n "$rate" ] \
        || rate=$(grep -oE '"tokens_per_s": [0-9.]+' "$work/log" | tail -1 | cut -d' ' -f2)
    peak=$(awk '/Maximum resident/ {printf "%.2f GiB", $6 / 1048576}' "$work/log")
    wall=$(awk '/Elapsed/ {print $8}' "$work/log")
    printf '%-44s %8.1f tok/s  %s  %s\n' "$label" "$rate" "$peak" "$wall"
}
