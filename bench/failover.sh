#!/usr/bin/env bash
# Master failover time with default flags: three masters on a real ZooKeeper
# (`--zk-session-timeout` default 10 s), one agent, one framework; kill -9 of
# the leader until the new leader's /metrics/snapshot shows
# master/slaves_active = 1 and offers outstanding. Prints one summary line
# per run (the ignored test `failover_time_with_default_flags` in
# tests/tests/ha.rs does the work; it gives up after 90 s).
#   bench/failover.sh [RUNS]      (default 1)
# MEZZO_BIN=path measures another build of `mezzo` (e.g. an older one).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-1}"
if [ -z "${MEZZO_BIN:-}" ]; then
  cargo build -q -p mezzo
  export MEZZO_BIN="$PWD/target/debug/mezzo"
fi
for _ in $(seq "$RUNS"); do
  timeout 300 cargo test -q -p mezzo-tests --test ha failover_time_with_default_flags \
    -- --ignored --nocapture --test-threads=1 2>/dev/null | grep '^failover'
done
