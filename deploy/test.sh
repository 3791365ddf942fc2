#!/usr/bin/env bash
# deploy/test.sh — command 2 of the README, and what CI runs (.ci/run): install and start
# what the tests need, then the contract checks (buf lint, buf breaking), formatting and
# lints, the deploy files, the observability files (Prometheus configuration, alert rules
# and their unit tests, the Grafana dashboard's queries), the compile-time SQL metadata,
# every Rust test against the real servers, the end-to-end smoke test (grpcurl, and a
# real Prometheus scraping the services) and the browser tests (Playwright, Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/infra.sh
. deploy/infra.sh

ensure_platform
ensure_buf
ensure_grpcurl
ensure_prometheus

section() { printf '\n== %s\n' "$*"; }

section "buf lint"
"$BUF" lint
if git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  section "buf breaking (against HEAD~1)"
  "$BUF" breaking --against '.git#ref=HEAD~1'
else
  section "buf breaking: skipped (no earlier commit with buf.yaml)"
fi

section "deploy files (compose, Kubernetes, Dockerfile, scripts)"
bash deploy/validate.sh

section "observability: Prometheus configuration, alert rules and their tests, dashboard queries"
bash tests/observability.sh

section "SQL checked at compile time: each crate's .sqlx/ matches its queries and migrations"
bash deploy/sqlx.sh check
# Every build below reads that metadata, never a live database.
export SQLX_OFFLINE=true

section "cargo fmt"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

section "cargo test"
# Databases of earlier runs (each test makes its own popug_test_* database).
psql -h 127.0.0.1 -U postgres -d postgres -Atqc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'popug_test_%'" |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null; done
cargo test --workspace --locked

section "smoke: the built services end to end with grpcurl"
bash tests/smoke.sh

section "e2e: the web client in headless Chromium against the running mesh"
bash tests/e2e.sh
