#!/usr/bin/env bash
# Benchmarks `macpool audit` before and after a change, side by side in one run, against
# `LC_ALL=C sort FILE | uniq -d` (results go into BENCHMARKS.md, "Offline audit"):
#   - two generated 10,000,000-line MAC lists: one drawn at random from a 32-bit space (about
#     11,600 MACs repeat by chance) and one with 1,000 planted duplicates; each audited in the
#     table, `--json` and `--csv` output, by the "before" and the "after" binary, and by
#     `sort | uniq -d` (wall time, peak RSS);
#   - a generated Hyper-V export (the shape of `macpool hyperv export-script --cluster`) with
#     1,000,000 live and checkpoint adapters (ADAPTERS=0 skips it).
# "before" is `cargo build --release -p macpool` of BASE (default: main) in a temporary git
# worktree (removed afterwards), "after" the same build of this checkout; both share the target
# directory, so the dependencies are built once. Every output of "before" and "after" is compared
# byte for byte, and the duplicated MACs each tool reports are compared with `uniq -d`'s.
#
# Usage: scripts/bench-audit.sh [WORKDIR]
#   env: BASE (main), LIST_LINES (10000000), ADAPTERS (1000000), RUNS (3, best is reported),
#        KEEP=1 keeps WORKDIR; BEFORE=/path/to/macpool or AFTER=… to measure prebuilt binaries.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
base=${BASE:-main}
lines=${LIST_LINES:-10000000}
adapters=${ADAPTERS:-1000000}
runs=${RUNS:-3}
work=${1:-$(mktemp -d)}
mkdir -p "$work"
checkout=""
cleanup() {
  if [ -n "$checkout" ]; then git -C "$root" worktree remove --force "$checkout" || true; fi
  if [ -z "${1:-}" ] && [ -z "${KEEP:-}" ]; then rm -rf "$work"; fi
}
trap 'cleanup "${1:-}"' EXIT

cd "$root"
base_commit=$(git rev-parse --short "$base")
after_commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo "+changes")
if [ -z "${BEFORE:-}" ]; then
  checkout=$(mktemp -d)/macpool-$base_commit
  git worktree add --detach --quiet "$checkout" "$base"
  (cd "$checkout" && CARGO_TARGET_DIR=$target cargo build --release --quiet -p macpool)
  cp "$target/release/macpool" "$work/macpool-before"
  git worktree remove --force "$checkout"
  checkout=""
  BEFORE=$work/macpool-before
fi
if [ -z "${AFTER:-}" ]; then
  cargo build --release --quiet -p macpool
  cp "$target/release/macpool" "$work/macpool-after"
  AFTER=$work/macpool-after
fi

random_list=$work/maclist-$lines-space32.txt
planted_list=$work/maclist-$lines-dups1000.txt
[ -s "$random_list" ] || python3 scripts/gen-maclist.py --lines "$lines" --space-bits 32 --seed 42 "$random_list"
[ -s "$planted_list" ] || python3 scripts/gen-maclist.py --lines "$lines" --dups 1000 --seed 42 "$planted_list"

# best wall time (s) and its peak RSS (KiB) over $runs runs; the exit status is ignored (the audit
# exits 1 when it finds conflicts, as it should here)
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
mib() { awk -v k="$1" 'BEGIN{printf "%.0f", k/1024}'; }
ratio() { awk -v s="$1" -v a="$2" 'BEGIN{ if (a == 0) print "∞"; else printf "%.1f", s/a }'; }
# the duplicated MACs the audit reports in its JSON
found() { { "$1" --json audit "$2" || [ $? -eq 1 ]; } | python3 -c 'import json,sys; c=json.load(sys.stdin)["summary"]["conflicts_by_class"]; print(" ".join(f"{k}={v}" for k,v in sorted(c.items())) or "none")'; }

rows=""
same=yes
for list in "$random_list" "$planted_list"; do
  cat "$list" >/dev/null # warm the page cache for every command alike
  read -r sort_wall sort_rss < <(measure sh -c 'LC_ALL=C sort "$0" | uniq -d' "$list")
  sort_dups=$(LC_ALL=C sort "$list" | uniq -d | wc -l)
  name=$(basename "$list" .txt)
  rows+="| \`$name\` ($(du -m "$list" | cut -f1) MB) | \`sort \\| uniq -d\` | ${sort_wall} s, $(mib "$sort_rss") MiB | | | $sort_dups duplicated MACs |"$'\n'
  audit_found=$(found "$AFTER" "$list")
  for format in table --json --csv; do
    case $format in
      table) args=(audit "$list") ;;
      --json) args=(--json audit "$list") ;;
      --csv) args=(audit --csv "$list") ;;
    esac
    read -r b_wall b_rss < <(measure "$BEFORE" "${args[@]}")
    read -r a_wall a_rss < <(measure "$AFTER" "${args[@]}")
    { "$BEFORE" "${args[@]}" >"$work/before.out" 2>&1 || true; }
    { "$AFTER" "${args[@]}" >"$work/after.out" 2>&1 || true; }
    if cmp -s "$work/before.out" "$work/after.out"; then identical=same; else identical="**differs**"; same=no; fi
    rows+="| | \`macpool ${args[*]/$list/FILE}\` | ${b_wall} s, $(mib "$b_rss") MiB ($(ratio "$sort_wall" "$b_wall")×) | ${a_wall} s, $(mib "$a_rss") MiB (**$(ratio "$sort_wall" "$a_wall")×**) | output $identical | $audit_found |"$'\n'
  done
done

export_row=""
if [ "$adapters" -gt 0 ]; then
  export_json=$work/hyperv-export-$adapters.json
  [ -s "$export_json" ] || python3 scripts/gen-hyperv-export.py --adapters "$adapters" --seed 7 "$export_json" 2>"$work/export-expected.txt"
  cat "$export_json" >/dev/null
  read -r b_wall b_rss < <(measure "$BEFORE" audit "$export_json")
  read -r a_wall a_rss < <(measure "$AFTER" audit "$export_json")
  export_row="| Hyper-V export, $adapters adapters ($(du -m "$export_json" | cut -f1) MB) | \`macpool audit FILE\` | ${b_wall} s, $(mib "$b_rss") MiB | ${a_wall} s, $(mib "$a_rss") MiB | | $(found "$AFTER" "$export_json") (planted: $(sed 's/.*expected: //' "$work/export-expected.txt" 2>/dev/null)) |"
fi

model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
cat <<MD
### \`macpool audit\` before and after ($(date -u +%Y-%m-%d))

Machine: $(nproc) cores (\`nproc\`), $model (\`lscpu\`), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, Linux $(uname -r).
Command: \`RUNS=$runs scripts/bench-audit.sh\` (best of $runs runs each, page cache warm, output to
\`/dev/null\`; peak RSS is GNU time's maximum resident set size, \`%M\`). Before: \`$base\` at
\`$base_commit\`; after: \`$after_commit\`; both \`cargo build --release -p macpool\`. In brackets: how
many times faster than \`LC_ALL=C sort FILE | uniq -d\` on the same file.

| input | command | before | after | | found (after) |
|---|---|---|---|---|---|
$rows$export_row

Outputs of before and after byte for byte the same in every format: $same.
MD
