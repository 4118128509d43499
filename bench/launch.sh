#!/usr/bin/env bash
# Whole-system launch throughput: `mezzo local` (release) plus the SDK's
# example framework launching N short tasks; prints one summary line.
#   bench/launch.sh [TASKS] [ISOLATION]      (defaults: 200 cgroups)
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS="${1:-200}"
ISOLATION="${2:-cgroups}"
cargo build --release -q -p mezzo -p mezzo-sdk --example launch --bin mezzo
work=$(mktemp -d /tmp/mezzo-bench.XXXXXX)
out="$work/local.out"
target/release/mezzo local --port 0 --marathon-port 0 --batch-port 0 --agent-port 0 \
  --work-dir "$work/w" --isolation "$ISOLATION" --allocation-interval 100ms \
  --resources 'cpus:8;mem:8192' >"$out" 2>"$work/local.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^master:' "$out" && break; sleep 0.1; done
master=$(sed -n 's#^master: http://##p' "$out")
start=$(date +%s.%N)
summary=$(target/release/examples/launch --master "$master" --tasks "$TASKS" --cmd true \
  --cpus 0.1 --mem 32 2>/dev/null | tail -1)
end=$(date +%s.%N)
secs=$(echo "$end - $start" | bc -l)
rate=$(echo "$TASKS / $secs" | bc -l)
printf 'launch: %s in %.2f s (%.1f tasks/s, isolation %s, %s cores)\n' "$summary" "$secs" "$rate" "$ISOLATION" "$(nproc)"
