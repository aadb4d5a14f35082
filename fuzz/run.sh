#!/usr/bin/env bash
# Run every fastmlp fuzz target for a share of N minutes (default 3) and
# print the figures: executions, distinct findings, native crashes.
#
#   fuzz/run.sh [MINUTES]            # needs: pip install atheris (not a test dependency)
#
# Corpora grow in fuzz/corpus/<target>/ (seeded by make_corpus.py), findings
# (contract violations, one file per distinct kind, the run goes on) in
# fuzz/findings/<target>/, libFuzzer artifacts (crash-*, oom-*, timeout-*) in
# fuzz/artifacts/. A target that dies (native crash, OOM) is restarted until
# its time is used up. Exit status: 0 if no findings and no artifacts.
set -uo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-3}"
TARGETS=(fuzz_load fuzz_load_header fuzz_arrays fuzz_datasets)
PY="${PYTHON:-python}"
"$PY" -c "import atheris" 2>/dev/null || { echo "atheris is not installed: pip install atheris"; exit 2; }
mkdir -p fuzz/corpus fuzz/findings fuzz/artifacts fuzz/logs
if [ ! -d fuzz/corpus/fuzz_datasets ]; then
  tmp=$(mktemp -d)
  "$PY" fuzz/make_corpus.py "$tmp" >/dev/null
  mkdir -p fuzz/corpus/fuzz_load fuzz/corpus/fuzz_load_header fuzz/corpus/fuzz_arrays
  cp -r "$tmp/load/." fuzz/corpus/fuzz_load/
  cp -r "$tmp/load_header/." fuzz/corpus/fuzz_load_header/
  cp -r "$tmp/arrays/." fuzz/corpus/fuzz_arrays/
  cp -r "$tmp/datasets" fuzz/corpus/fuzz_datasets
  rm -rf "$tmp"
fi
PER=$(( MINUTES * 60 / ${#TARGETS[@]} ))
[ "$PER" -lt 5 ] && PER=5
total_runs=0; total_findings=0; total_artifacts=0
summary=""
for t in "${TARGETS[@]}"; do
  log="fuzz/logs/$t.log"; : > "$log"
  runs=0; starts=0
  end=$(( $(date +%s) + PER ))
  while [ "$(date +%s)" -lt "$end" ]; do
    left=$(( end - $(date +%s) )); [ "$left" -lt 2 ] && break
    starts=$((starts + 1))
    "$PY" "fuzz/$t.py" -max_total_time="$left" -timeout=30 -rss_limit_mb=4096 -max_len=8192 \
      -artifact_prefix="fuzz/artifacts/$t-" -print_final_stats=1 "fuzz/corpus/$t" > "fuzz/logs/$t.last" 2>&1
    n=$(grep -aoE '^#[0-9]+' "fuzz/logs/$t.last" | tr -d '#' | sort -n | tail -1)
    d=$(grep -aoE 'Done [0-9]+ runs' "fuzz/logs/$t.last" | grep -oE '[0-9]+' | tail -1)
    [ -n "$d" ] && n=$d
    runs=$(( runs + ${n:-0} ))
    cat "fuzz/logs/$t.last" >> "$log"
  done
  name=${t#fuzz_}
  f=$(ls fuzz/findings/"$name"/*.txt 2>/dev/null | wc -l)
  a=$(ls fuzz/artifacts/"$t"-* 2>/dev/null | wc -l)
  if [ "$runs" -eq 0 ]; then  # the target did not start: count it as a failure, show why
    a=$((a + 1)); echo "$t did not run; the end of fuzz/logs/$t.log:"; tail -5 "$log"
  fi
  total_runs=$((total_runs + runs)); total_findings=$((total_findings + f)); total_artifacts=$((total_artifacts + a))
  summary+=$(printf "%-18s %6ss %10s executions  %3s findings  %3s native artifacts  (%s start(s))" \
             "$t" "$PER" "$runs" "$f" "$a" "$starts")$'\n'
done
echo
echo "fastmlp fuzz run: $MINUTES min, $(date -u +%Y-%m-%dT%H:%MZ), python $("$PY" -c 'import platform; print(platform.python_version())'), atheris $("$PY" -c 'import importlib.metadata as m; print(m.version("atheris"))')"
printf "%s" "$summary"
echo "total: $total_runs executions, $total_findings distinct findings, $total_artifacts native crash/oom/timeout artifacts"
for d in fuzz/findings/*/; do
  for f in "$d"*.txt; do [ -e "$f" ] && echo "  finding $(basename "$d")/$(basename "$f" .txt): $(sed -n 2p "$f" | cut -c1-150)"; done
done
for f in fuzz/artifacts/*; do [ -e "$f" ] && echo "  artifact $f"; done
[ "$total_findings" -eq 0 ] && [ "$total_artifacts" -eq 0 ]
