#!/usr/bin/env bash
# tests/smoke.sh — the built binaries end to end, driven only by grpcurl and curl as a user
# would: reflection lists the services, health says SERVING, the bootstrap admin logs in,
# the token's kid is in the published JWKS and the service accepts the token.
# Isolated: its own database, stream prefix and ports; everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/infra.sh
ensure_grpcurl

bin="${CARGO_TARGET_DIR:-target}/debug"
cargo build --locked --quiet -p account

db="popug_smoke_$$"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "smoke: FAILED: $*" >&2
  for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 30 "$log" >&2; done
  exit 1
}

export ACCOUNT__GRPC_ADDR=127.0.0.1:56051 ACCOUNT__HTTP_ADDR=127.0.0.1:56081
export ACCOUNT__DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export ACCOUNT__STREAM_PREFIX="smoke$$"
export ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD=smoke-admin-pw
"$bin/account" serve >"$work/account.log" 2>&1 &
pids+=($!)
wait_tcp 127.0.0.1 56051 30 || fail "account did not listen"

g() { "$GRPCURL" -plaintext "$@"; }
passed=0
check() { passed=$((passed + 1)); echo "ok - $*"; }

services="$(g 127.0.0.1:56051 list)"
for s in popug.account.v1.AccountService popug.account.v1.AuthService grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "reflection does not list $s: $services"
done
check "grpcurl list shows the services"

g 127.0.0.1:56051 describe popug.account.v1.AuthService.Login | grep -q 'LoginRequest' || fail "describe"
check "grpcurl describe works"

for s in popug.account.v1.AuthService popug.account.v1.AccountService; do
  g -d "{\"service\":\"$s\"}" 127.0.0.1:56051 grpc.health.v1.Health/Check | grep -q SERVING || fail "health $s"
done
check "health says SERVING"

login="$(g -d '{"username":"admin","password":"smoke-admin-pw"}' 127.0.0.1:56051 popug.account.v1.AuthService/Login)" ||
  fail "login"
token="$(jq -r .tokens.accessToken <<<"$login")"
[[ -n "$token" && "$token" != null ]] || fail "no access token in $login"
check "the bootstrap admin logs in"

kid="$(cut -d. -f1 <<<"$token" | tr '_-' '/+' | base64 -d 2>/dev/null | jq -r .kid)" || true
curl -fsS http://127.0.0.1:56081/.well-known/jwks.json | jq -e --arg kid "$kid" '.keys | map(.kid) | index($kid)' >/dev/null ||
  fail "kid $kid not in the JWKS"
check "the token's kid ($kid) is published in the JWKS"

me="$(g -H "authorization: Bearer $token" 127.0.0.1:56051 popug.account.v1.AccountService/WhoAmI)" || fail "WhoAmI"
[[ "$(jq -r .account.username <<<"$me")" == admin ]] || fail "WhoAmI answered $me"
check "the service verifies the token (WhoAmI)"

if g 127.0.0.1:56051 popug.account.v1.AccountService/WhoAmI >/dev/null 2>"$work/denied.txt"; then
  fail "WhoAmI without a token succeeded"
fi
grep -q Unauthenticated "$work/denied.txt" || fail "expected Unauthenticated, got $(cat "$work/denied.txt")"
check "no token, no call"

echo "smoke: $passed passed, 0 failed"
