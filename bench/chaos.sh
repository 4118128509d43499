#!/usr/bin/env bash
# The long chaos profile (issue 13, item 4): builds `mezzo` and runs the
# ignored long test of tests/tests/chaos.rs.
#
#   bench/chaos.sh                 # 600 s of chaos, a random seed (printed)
#   MEZZO_CHAOS_SECS=120 bench/chaos.sh
#   MEZZO_CHAOS_SEED=1234 bench/chaos.sh   # replay a failing run
#
# Needs java + the Debian zookeeper package and python3; runs as root for
# cgroups isolation (posix otherwise). Logs of the processes are kept in
# test-output/ with MEZZO_KEEP_LOGS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export MEZZO_CHAOS_SECS="${MEZZO_CHAOS_SECS:-600}"
cargo build -p mezzo
export MEZZO_BIN="${MEZZO_BIN:-$PWD/target/debug/mezzo}"
export MEZZO_PYTHON="${MEZZO_PYTHON:-python3}"
exec cargo test -p mezzo-tests --test chaos -- chaos_long_profile --ignored --nocapture --test-threads=1
