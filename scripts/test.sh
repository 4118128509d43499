#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what tests need, checks
# formatting and lints, builds the binaries the end-to-end tests start, and
# runs every test. Needs root (tasks run in real cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi

echo "== test tools"
# chromium drives the dashboard test; promtool (package prometheus) checks /metrics.
missing=()
for pkg in chromium prometheus; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "== python test clients"
scripts/python-env.sh
export MEZZO_PYTHON="$PWD/.venv/bin/python"
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build"
cargo build --locked -p mezzo -p mezzo-sdk --examples --bins
export MEZZO_BIN="$PWD/target/debug/mezzo"
export MEZZO_EXAMPLES_DIR="$PWD/target/debug/examples"
export MEZZO_TEST_OUTPUT="$PWD/test-output"
mkdir -p "$MEZZO_TEST_OUTPUT"
echo "== test"
# End-to-end tests start real processes; two at a time suits a 2-core box.
cargo test --workspace --locked -- --test-threads="${MEZZO_TEST_THREADS:-2}"
echo "== all tests passed"
