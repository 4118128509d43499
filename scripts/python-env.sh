#!/usr/bin/env bash
# Creates <repo>/.venv with the real client libraries the compatibility tests
# drive: `marathon` (Marathon's Python client), `kazoo` (ZooKeeper) and
# `pymesos` (Mesos' v1 HTTP scheduler API). pymesos depends on http-parser,
# whose C extension does not build on Python 3.11; pymesos only needs its
# pure-Python parser, so that package is installed without building.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MEZZO_VENV:-$PWD/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --disable-pip-version-check 'marathon==0.13.0' 'kazoo==2.11.0' six addict
if ! "$PY" -c 'import http_parser.parser' 2>/dev/null; then
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: 'http-parser==0.9.0' -d "$tmp"
  tar -xzf "$tmp"/http-parser-*.tar.gz -C "$tmp"
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$site/http_parser"
  cp -r "$tmp"/http-parser-*/http_parser "$site/http_parser"
  # Keep only the pure-Python parser: the C one is what fails to build.
  rm -f "$site/http_parser/parser.pyx" "$site/http_parser/"*.c
  cat > "$site/http_parser/parser.py" <<'PYEOF'
from http_parser.pyparser import HttpParser  # noqa: F401  pure-Python fallback
PYEOF
  rm -rf "$tmp"
fi
"$PY" -m pip install -q --disable-pip-version-check --no-deps 'pymesos==0.3.15'
"$PY" -c 'import marathon, kazoo, pymesos; from http_parser.parser import HttpParser' 
echo "python env: $VENV"
