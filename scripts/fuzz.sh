#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of outside data (opt-in; not run by .ci/run,
# which only replays the committed corpora through tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh                 # every target for FUZZ_SECONDS (60) each, one at a time
#   FUZZ_SECONDS=600 FUZZ_TARGETS="config slot_body" scripts/fuzz.sh
#   FUZZ_MERGE=1 scripts/fuzz.sh    # then fold new inputs into fuzz/corpus/ (cargo fuzz cmin)
#
# Built with debug assertions (-a), so an integer overflow is a crash too.
# Needs the nightly toolchain (`cargo +nightly`); installs cargo-fuzz into .tools/ if
# missing. New inputs go to fuzz/artifacts/work/<target>/ (the committed corpus is only
# read), crashes to fuzz/artifacts/<target>/. A length field that makes the code ask for
# more than FUZZ_MALLOC_MB in one allocation, or RSS above FUZZ_RSS_MB, is a crash.
# Exits non-zero when any target crashed; prints target / time / execs / exec/s / cov / ft.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-60}
RSS_MB=${FUZZ_RSS_MB:-2048}
MALLOC_MB=${FUZZ_MALLOC_MB:-512}
CARGO_FUZZ_VERSION=0.13.1
TOOLS="$ROOT/.tools/cargo-fuzz"
export PATH="$TOOLS/bin:$PATH"
# cargo-fuzz builds with sanitizer flags into its own target dir (fuzz/target).
unset CARGO_TARGET_DIR

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$TOOLS"
fi

cd fuzz
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
for t in "${targets[@]}"; do cargo +nightly fuzz build -O -a "$t"; done

failed=()
rows=()
for t in "${targets[@]}"; do
  work="artifacts/work/$t"
  log="artifacts/$t.log"
  mkdir -p "$work" "artifacts/$t"
  echo "==> $t: ${SECONDS_EACH}s"
  status=0
  cargo +nightly fuzz run -O -a "$t" "$work" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$MALLOC_MB" \
    -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  verdict=ok
  if [ "$status" -ne 0 ]; then
    verdict="CRASH (see fuzz/$log, fuzz/artifacts/$t/)"
    failed+=("$t")
  fi
  rows+=("$(printf '%-16s %6ss %12s %10s %7s %7s  %s' "$t" "$SECONDS_EACH" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "$verdict")")
  if [ "${FUZZ_MERGE:-0}" = 1 ] && [ "$status" -eq 0 ]; then
    cp -n "$work"/* "corpus/$t/" 2>/dev/null || true
    # Keep the inputs that add an edge (not every hit count): a small corpus.
    cargo +nightly fuzz cmin -O -a "$t" "corpus/$t" -- -use_counters=0 -use_value_profile=0 \
      >>"$log" 2>&1
  fi
done

printf '\n%-16s %7s %12s %10s %7s %7s  %s\n' target time execs exec/s cov ft result
printf '%s\n' "${rows[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
