#!/usr/bin/env bash
# deploy/down.sh — stops the services deploy/up.sh started (infrastructure keeps running).
set -euo pipefail
cd "$(dirname "$0")/.."
quiet="${1:-}"
shopt -s nullglob
for pidfile in .run/*.pid; do
  pid="$(cat "$pidfile")"
  name="$(basename "$pidfile" .pid)"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    [[ "$quiet" == --quiet ]] || echo "down: stopped $name"
  fi
  rm -f "$pidfile"
done
