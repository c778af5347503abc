#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, seeded from the audit's sample files.
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-60}
# The same inputs run as ordinary tests under `cargo test` (macpool-audit's tests/audit.rs:
# corpus_inputs_run_through_every_fuzz_target), since stable Rust cannot build these targets.
data=../crates/macpool-audit/tests/data
# hostile inputs (XML 15,000 levels deep, an entity expansion, JSON 15,000 levels deep), kept out of
# tests/data, whose whole-directory audit is a test of its own
hostile=../crates/macpool-audit/tests/seeds
declare -A seeds=(
  [hyperv_json]="$data/hyperv $data/malformed $hostile"
  [libvirt_xml]="$data/libvirt $data/malformed $hostile"
  [mac_list]="$data/lists $hostile"
  [dhcp_leases]="$data/dhcp"
  [detect_and_parse]="$data/hyperv $data/libvirt $data/lists $data/dhcp $data/malformed $hostile"
  [mac_and_range]=""
)
failed=0
mkdir -p logs
for target in hyperv_json libvirt_xml mac_list dhcp_leases detect_and_parse mac_and_range; do
  mkdir -p "corpus/$target"
  log="logs/$target.log"
  # shellcheck disable=SC2086 # the seed list is meant to split into directories
  if cargo +nightly fuzz run -O "$target" "corpus/$target" ${seeds[$target]} -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    echo "$target: ok, $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second\(s\)' "$log" | tail -n1)"
  else
    echo "$target: FAILED (see fuzz/$log and fuzz/artifacts/$target/)"
    failed=1
  fi
done
exit "$failed"
