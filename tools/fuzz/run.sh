#!/usr/bin/env bash
# Fuzz the safetensors reader with libFuzzer + AddressSanitizer.
#
#   tools/fuzz/run.sh                    # 10,000,000 executions (the issue's bar)
#   tools/fuzz/run.sh --runs 200000      # quick smoke, e.g. in CI
#   tools/fuzz/run.sh --seconds 600      # time-boxed instead (unbounded runs)
#
# Options:
#   --runs N          executions (default 10000000; -1 = unbounded, for use with --seconds)
#   --seconds S       stop after S seconds (libFuzzer -max_total_time)
#   --max-len B       largest input in bytes (default 4096)
#   --timeout T       seconds one input may take before it is a finding (default 5)
#   --work DIR        scratch folder: binary, corpus, artifacts, log (default /tmp/fuzz-safetensors)
#   --fresh           start from the seeds only (drop the corpus grown by earlier runs)
#   --value-profile   libFuzzer -use_value_profile=1 (more features, slower)
#   --rebuild         compile even if the binary is newer than every source
#   -- ARGS...        extra arguments passed to libFuzzer as they are
#
# The binary is Sources/Safetensors/*.swift + tools/fuzz/FuzzSafetensors.swift compiled as one
# module with `swiftc -sanitize=fuzzer,address -parse-as-library -O`. The corpus starts from
# copies of Tests/Fixtures/safetensors/{valid,malformed} and tools/fuzz/seeds in the scratch
# folder; nothing is ever written into the repository. Crashes, leaks, timeouts and OOMs are
# written to WORK/artifacts/ and listed at the end; the exit status is non-zero when any exist.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

runs=10000000
runs_given=0
seconds=""
max_len=4096
timeout=5
work=/tmp/fuzz-safetensors
fresh=0
value_profile=0
rebuild=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; runs_given=1; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --max-len) max_len="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --value-profile) value_profile=1; shift ;;
    --rebuild) rebuild=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,23p' "$0" | sed -E 's/^# ?//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$seconds" ] && [ "$runs_given" = 0 ]; then runs=-1; fi

mkdir -p "$work"
binary="$work/fuzz-safetensors"
sources=("$root"/Sources/Safetensors/*.swift "$here/FuzzSafetensors.swift")

# --- build ------------------------------------------------------------------------------------
needs_build=$rebuild
[ -x "$binary" ] || needs_build=1
if [ "$needs_build" = 0 ]; then
  for source in "${sources[@]}"; do
    if [ "$source" -nt "$binary" ]; then needs_build=1; fi
  done
fi
if [ "$needs_build" = 1 ]; then
  echo "== compiling $binary"
  build_start=$(date +%s.%N)
  if ! swiftc -sanitize=fuzzer,address -parse-as-library -O -g \
      -module-name Safetensors -o "$binary.tmp" "${sources[@]}" 2>"$work/build.log"; then
    cat "$work/build.log" >&2
    echo "compile failed (log: $work/build.log); -sanitize=fuzzer needs the toolchain's lib/swift/clang/lib/linux/libclang_rt.fuzzer-*.a" >&2
    exit 2
  fi
  mv "$binary.tmp" "$binary"
  awk -v a="$build_start" -v b="$(date +%s.%N)" 'BEGIN { printf "   compiled in %.1f s\n", b - a }'
else
  echo "== $binary is up to date (--rebuild to force)"
fi

# --- corpus -----------------------------------------------------------------------------------
corpus="$work/corpus"
artifacts="$work/artifacts"
if [ "$fresh" = 1 ]; then rm -rf "$corpus"; fi
mkdir -p "$corpus" "$artifacts"
for folder in "$root/Tests/Fixtures/safetensors/valid" "$root/Tests/Fixtures/safetensors/malformed" "$here/seeds"; do
  for file in "$folder"/*.safetensors; do
    [ -e "$file" ] || continue
    cp "$file" "$corpus/seed-$(basename "$folder")-$(basename "$file")"
  done
done
find "$artifacts" -type f | sort >"$work/artifacts.before"

# --- run --------------------------------------------------------------------------------------
log="$work/fuzz.log"
args=(-runs="$runs" -max_len="$max_len" -timeout="$timeout" -rss_limit_mb=2048 -malloc_limit_mb=512
      -dict="$here/safetensors.dict" -artifact_prefix="$artifacts/" -print_final_stats=1)
[ -n "$seconds" ] && args+=(-max_total_time="$seconds")
[ "$value_profile" = 1 ] && args+=(-use_value_profile=1)
args+=("${extra[@]}")
echo "== $binary ${args[*]} $corpus"
echo "   log: $log"
start=$(date +%s.%N)
set +e
# SWIFT_BACKTRACE=enable=no: the Swift runtime's crash backtracer reads the crashed thread's stack
# from another thread, which ASan reports as a stack-buffer-underflow on top of the real finding.
SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}" \
  "$binary" "${args[@]}" "$corpus" >"$log" 2>&1
status=$?
set -e
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# --- summary ----------------------------------------------------------------------------------
echo "== summary"
grep -E '^#[0-9]+' "$log" | tail -n 1 | sed 's/^/   last status: /' || true
grep -E '^Done [0-9]+ runs' "$log" | sed 's/^/   /' || true
executed=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)
per_second=$(grep -E '^stat::average_exec_per_sec:' "$log" | awk '{print $2}' || true)
echo "   executions: ${executed:-?}   exec/s: ${per_second:-?}   wall: $elapsed s"
echo "   corpus: $(find "$corpus" -type f | wc -l) files in $corpus"
new_artifacts=$(find "$artifacts" -type f | sort | comm -13 "$work/artifacts.before" -)
if [ "$status" != 0 ] || [ -n "$new_artifacts" ]; then
  echo "   FINDINGS (libFuzzer exit $status):"
  grep -E '^(==[0-9]+==ERROR|SUMMARY:|Fatal error|.*fuzz property broken|artifact_prefix|Test unit written)' "$log" | head -n 20 | cut -c1-300 | sed 's/^/     /' || true
  [ -n "$new_artifacts" ] && echo "$new_artifacts" | sed 's/^/     artifact: /'
  echo "     reproduce: SWIFT_BACKTRACE=enable=no $binary <artifact>"
  echo "     minimise:  SWIFT_BACKTRACE=enable=no $binary -minimize_crash=1 -runs=100000 <artifact>"
  exit 1
fi
echo "   no findings (no crash, leak, timeout or OOM)"
