#!/usr/bin/env bash
# tests/e2e.sh — the web client in a real browser against the real mesh.
#
# Builds web/ (npm ci + vite build), starts Account, TaskKeeper, Accounting and the
# Gateway from target/debug with their own databases, stream prefix and ports (27xxx),
# the gateway serving web/dist; seeds the demo users; runs the
# Playwright tests (playwright-core + Debian's chromium, headless) under `node --test`;
# saves screenshots to tests/artifacts/; stops everything it started.
#
#   bash tests/e2e.sh            run the tests
#   bash tests/e2e.sh --serve    start the same mesh and keep it up (Ctrl-C stops it):
#                                the UI is at http://127.0.0.1:27080
#
# Last line: "e2e: N passed, N failed" (N skipped may follow).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
. deploy/infra.sh
ensure_postgres
ensure_nats
ensure_redis
ensure_node
ensure_grpcurl

serve=0
[[ "${1:-}" == --serve ]] && serve=1

# Debian's chromium: Playwright's own browser download cannot be used here.
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  _infra_apt_install chromium
fi

# E2E_SKIP_CARGO=1: use the binaries in target/debug as they are.
MESH_BIN="${CARGO_TARGET_DIR:-target}/debug"
if [[ "${E2E_SKIP_CARGO:-}" != 1 ]]; then
  cargo build --locked --quiet -p account -p taskkeeper -p accounting -p gateway
fi

# --- the web client ---------------------------------------------------------------------
(
  cd web
  npm ci --no-audit --no-fund --loglevel=error
  # Generates the client code from proto/ (src/gen), type-checks and bundles.
  npm run --silent build
) || { echo "e2e: web build failed" >&2; echo "e2e: 0 passed, 1 failed"; exit 1; }

# --- the mesh -----------------------------------------------------------------------------
. tests/mesh.sh
fail() {
  echo "e2e: 0 passed, 1 failed"
  mesh_fail "$@"
}
work="$MESH_WORK"
trap 'exit 130' INT TERM
export RUST_LOG="${RUST_LOG:-info}"
export ACCOUNTING__CLOSE_CHECK_SECONDS=0 # the admin closes the day by hand in the tests
export ACCOUNTING__SMTP_PORT=27025       # nothing listens: payout mails just stay queued
export GATEWAY__WEB_DIR="$root/web/dist"
# Each browser test logs in several roles from one address in quick succession.
export GATEWAY__RATE_LIMIT_PER_SEC=1000 GATEWAY__RATE_LIMIT_BURST=2000
mesh_start "popug_e2e_$$" 27000
RUST_LOG=warn "$MESH_BIN/account" seed-demo >"$work/seed.log" 2>&1 || fail "seed-demo"

# The browser's origin is the gateway itself: it serves web/dist over HTTP/1.1.
base="http://$GATEWAY_ADDR"
front="$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: text/html' "$base/tasks" || true)"
[[ "$front" == 200 ]] || fail "the gateway answers $front (not 200) for the web client's pages"

if ((serve)); then
  echo "e2e: the mesh is up: $base (logs in $work); Ctrl-C stops it"
  wait "${MESH_PIDS[@]}"
  exit 0
fi

# --- the browser tests ----------------------------------------------------------------------
rm -rf tests/artifacts
mkdir -p tests/artifacts
export E2E_BASE_URL="$base" E2E_ARTIFACTS="$root/tests/artifacts"
export CHROMIUM
status=0
node --test --test-concurrency=1 --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$work/tap.txt" \
  tests/e2e/*.test.mjs || status=$?

passed="$(awk '/^# pass /{print $3}' "$work/tap.txt")"
failed="$(awk '/^# fail /{print $3}' "$work/tap.txt")"
skipped="$(awk '/^# skipped /{print $3}' "$work/tap.txt")"
if ((status != 0)) && [[ "${failed:-0}" == 0 ]]; then failed=1; fi
if ((status != 0)); then
  for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
fi
echo "screenshots: $(find tests/artifacts -name '*.png' -printf '%f\n' | sort | tr '\n' ' ')"
if [[ "${skipped:-0}" != 0 ]]; then
  echo "e2e: ${passed} passed, ${failed:-0} failed, ${skipped} skipped"
else
  echo "e2e: ${passed} passed, ${failed:-0} failed"
fi
exit "$status"
