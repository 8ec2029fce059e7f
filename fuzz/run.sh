#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 180) each, with AddressSanitizer.
#
#   fuzz/run.sh                  # all targets
#   FUZZ_SECONDS=600 fuzz/run.sh route_match
#
# Needs cargo-fuzz (cargo install cargo-fuzz). No nightly toolchain is needed: cargo-fuzz
# passes nightly-only rustc flags (-Zsanitizer=address), which stable rustc accepts when
# RUSTC_BOOTSTRAP=1 is set; stable ships the sanitizer runtimes for x86_64 Linux.
# Crashes land in fuzz/artifacts/<target>/; the growing corpus in fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
SECONDS_EACH=${FUZZ_SECONDS:-180}
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then TARGETS=(config_parse route_match template_render); fi
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    echo "== $t for ${SECONDS_EACH}s"
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a blow-up is a finding.
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
