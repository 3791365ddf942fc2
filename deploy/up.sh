#!/usr/bin/env bash
# deploy/up.sh — command 1 of the README: install what is missing, start PostgreSQL, NATS
# (JetStream) and Redis, create the databases, build and migrate, start every service in
# the background (logs and pids in .run/) with a maildev inbox for payout e-mails, seed
# the demo users and print where to connect.
# Run it again to rebuild and restart; deploy/down.sh stops the services.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/infra.sh
. deploy/infra.sh

ensure_platform
ensure_grpcurl
ensure_db popug_account
ensure_db popug_taskkeeper
ensure_db popug_accounting

echo "up: building the web client…"
ensure_node
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
echo "up: building the services (release)…"
# SQL is checked against the committed query metadata (each crate's .sqlx/).
export SQLX_OFFLINE=true
cargo build --release --locked --quiet -p account -p taskkeeper -p accounting -p gateway
bin="${CARGO_TARGET_DIR:-target}/release"
mkdir -p .run

export ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD="${ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD:-popug-admin}"
export ACCOUNT__DATABASE_URL="${ACCOUNT__DATABASE_URL:-postgres://postgres@127.0.0.1:5432/popug_account}"

bash deploy/down.sh --quiet
"$bin/account" migrate
"$bin/taskkeeper" migrate
"$bin/accounting" migrate

# Each service: name, gRPC port.
start() {
  local name="$1" port="$2"
  nohup "$bin/$name" serve >".run/$name.log" 2>&1 &
  echo $! >".run/$name.pid"
  if ! wait_tcp 127.0.0.1 "$port" 30; then
    echo "up: $name did not start; last log lines:" >&2
    tail -n 20 ".run/$name.log" >&2
    exit 1
  fi
  "$GRPCURL" -plaintext 127.0.0.1:"$port" grpc.health.v1.Health/Check >/dev/null
}
start account 50051
start taskkeeper 50052
# Payout e-mails go to a local maildev: SMTP 1025, inbox http://127.0.0.1:1080.
ensure_maildev 1025 1080 .run/maildev.pid
export ACCOUNTING__SMTP_PORT="${ACCOUNTING__SMTP_PORT:-1025}"
start accounting 50053
start gateway 8080

RUST_LOG="${RUST_LOG:-warn}" "$bin/account" seed-demo

cat <<MSG

PopugJira is up.
  Account     gRPC  127.0.0.1:50051   (JWKS: http://127.0.0.1:8081/.well-known/jwks.json)
  TaskKeeper  gRPC  127.0.0.1:50052
  Accounting  gRPC  127.0.0.1:50053   (payout e-mails: http://127.0.0.1:1080)
  Gateway     gRPC + grpc-web  127.0.0.1:8080   <- the public entry; use this one
  Web UI      http://127.0.0.1:8080   (demo users below)
  logs in .run/*.log; stop with: bash deploy/down.sh

Try it (grpcurl: $GRPCURL):
  grpcurl -plaintext 127.0.0.1:8080 list
  grpcurl -plaintext -d '{"username":"admin","password":"popug-admin"}' \\
      127.0.0.1:8080 popug.account.v1.AuthService/Login
MSG
