#!/usr/bin/env bash
# Whole-system launch throughput: a release master and agent, and the SDK's
# example framework launching N short tasks; prints one summary line.
#   bench/launch.sh [TASKS] [ISOLATION]      (defaults: 200 cgroups)
# The master runs no other framework, so offers go to the launcher alone.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS="${1:-200}"
ISOLATION="${2:-cgroups}"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p mezzo -p mezzo-sdk --example launch --bin mezzo
work=$(mktemp -d /tmp/mezzo-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pkill -9 -f "$work" 2>/dev/null || true
  # Executors remove their own cgroups; the per-run root is ours to remove.
  for d in /sys/fs/cgroup/*/"mezzo-bench-$$"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
target/release/mezzo master --port 0 --allocation-interval 100ms >"$work/master.out" 2>"$work/master.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^master:' "$work/master.out" && break; sleep 0.1; done
master=$(sed -n 's#^master: http://##p' "$work/master.out")
target/release/mezzo agent --master "$master" --port 0 --work-dir "$work/agent" --isolation "$ISOLATION" \
  --cgroups-root "mezzo-bench-$$" --resources 'cpus:8;mem:8192' >"$work/agent.out" 2>"$work/agent.err" &
pids+=($!)
start=$(date +%s.%N)
summary=$(target/release/examples/launch --master "$master" --tasks "$TASKS" --cmd true \
  --cpus 0.1 --mem 32 2>/dev/null | tail -1)
end=$(date +%s.%N)
secs=$(echo "$end - $start" | bc -l)
rate=$(echo "$TASKS / $secs" | bc -l)
printf 'launch: %s in %.2f s (%.1f tasks/s, isolation %s, %s cores)\n' "$summary" "$secs" "$rate" "$ISOLATION" "$(nproc)"
