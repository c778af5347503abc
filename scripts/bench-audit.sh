#!/usr/bin/env bash
# Benchmarks `macpool audit` (results go into BENCHMARKS.md):
#   1. a generated 10,000,000-line MAC list with 1,000 planted duplicates: the audit against
#      `LC_ALL=C sort FILE | uniq -d` on the same file, side by side (wall time, peak RSS);
#   2. a generated Hyper-V export (the shape of `macpool hyperv export-script --cluster`) with
#      1,000,000 live and checkpoint adapters: wall time and peak RSS.
# Both tools must report the same number of duplicated MACs, and the export its planted conflicts.
#
# Usage: scripts/bench-audit.sh [WORKDIR]
#   env: LIST_LINES (10000000), ADAPTERS (1000000), RUNS (3, best is reported), KEEP=1 keeps WORKDIR
#        CARGO_TARGET_DIR as usual; AUDIT="path args…" to measure another audit command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
lines=${LIST_LINES:-10000000}
adapters=${ADAPTERS:-1000000}
runs=${RUNS:-3}
work=${1:-$(mktemp -d)}
mkdir -p "$work"
if [ -z "${1:-}" ] && [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; fi

cd "$root"
if [ -n "${AUDIT:-}" ]; then
  read -r -a audit <<<"$AUDIT"
else
  cargo build --release --quiet -p macpool-audit --example audit
  cargo build --release --quiet -p macpool 2>/dev/null || true
  if [ -x "$target/release/macpool" ] && "$target/release/macpool" audit --help >/dev/null 2>&1; then
    audit=("$target/release/macpool" audit)
  else
    audit=("$target/release/examples/audit")
  fi
fi

list=$work/maclist-$lines.txt
export_json=$work/hyperv-export-$adapters.json
[ -s "$list" ] || python3 scripts/gen-maclist.py --lines "$lines" --dups 1000 --seed 42 "$list"
[ -s "$export_json" ] || python3 scripts/gen-hyperv-export.py --adapters "$adapters" --seed 7 "$export_json" 2>"$work/export-expected.txt"

# best wall time (s) and its peak RSS (KiB) over $runs runs; the command's exit status is ignored
# (the audit exits 1 when it finds conflicts, as it should here)
measure() {
  local best_wall="" best_rss="" wall rss
  for _ in $(seq "$runs"); do
    /usr/bin/time -f '%e %M' -o "$work/time.txt" "$@" >/dev/null 2>&1 || true
    read -r wall rss < <(tail -n1 "$work/time.txt")
    if [ -z "$best_wall" ] || awk -v a="$wall" -v b="$best_wall" 'BEGIN{exit !(a<b)}'; then
      best_wall=$wall best_rss=$rss
    fi
  done
  echo "$best_wall $best_rss"
}

cat "$list" "$export_json" >/dev/null # warm the page cache for both sides alike

read -r sort_wall sort_rss < <(measure sh -c 'LC_ALL=C sort "$0" | uniq -d' "$list")
read -r list_wall list_rss < <(measure "${audit[@]}" "$list")
read -r json_wall json_rss < <(measure "${audit[@]}" "$export_json")

# the same answer: duplicated MACs found by each
sort_dups=$(LC_ALL=C sort "$list" | uniq -d | wc -l)
# (exit status 1 means "conflicts found", which is the point here)
count() { { "${audit[@]}" --json "$1" || [ $? -eq 1 ]; } | python3 -c 'import json,sys; c=json.load(sys.stdin)["summary"]["conflicts_by_class"]; print(" ".join(f"{k}={v}" for k,v in sorted(c.items())))'; }
audit_list=$(count "$list")
audit_json=$(count "$export_json")

speedup=$(awk -v s="$sort_wall" -v a="$list_wall" 'BEGIN{printf "%.1f", s/a}')
mib() { awk -v k="$1" 'BEGIN{printf "%.0f", k/1024}'; }
model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)

cat <<MD
### \`macpool audit\` ($(date -u +%Y-%m-%d), ${audit[*]##*/})

Machine: $(nproc) cores (\`nproc\`), $model (\`lscpu\`), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, Linux $(uname -r).
Command: \`scripts/bench-audit.sh\` (best of $runs runs each, page cache warm; peak RSS is GNU time's maximum resident set size, \`%M\`, the figure \`/usr/bin/time -v\` prints).

| input | command | wall | peak RSS | found |
|---|---|---|---|---|
| $lines-line MAC list ($(du -m "$list" | cut -f1) MB) | \`LC_ALL=C sort FILE \\| uniq -d\` | ${sort_wall} s | $(mib "$sort_rss") MiB | $sort_dups duplicated MACs |
| same file | \`${audit[*]##*/} FILE\` | ${list_wall} s | $(mib "$list_rss") MiB | $audit_list |
| Hyper-V export, $adapters adapters ($(du -m "$export_json" | cut -f1) MB) | \`${audit[*]##*/} FILE\` | ${json_wall} s | $(mib "$json_rss") MiB | $audit_json (planted: $(sed 's/.*expected: //' "$work/export-expected.txt")) |

The audit is **${speedup}×** faster than \`sort | uniq -d\` on the MAC list.
MD
