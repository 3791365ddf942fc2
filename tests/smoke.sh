#!/usr/bin/env bash
# tests/smoke.sh — the built binaries end to end, driven only by grpcurl and curl as a user
# would: reflection lists the services, health says SERVING, the bootstrap admin logs in,
# the token's kid is in the published JWKS and the service accepts the token; the demo
# users are seeded, a worker creates a task, its assignee completes it, a manager
# reassigns, and the permission and input rules hold.
# Isolated: its own database, stream prefix and ports; everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/infra.sh
ensure_grpcurl

bin="${CARGO_TARGET_DIR:-target}/debug"
cargo build --locked --quiet -p account -p taskkeeper -p gateway

db="popug_smoke_$$"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE ${db}_tasks" >/dev/null
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS ${db}_tasks" >/dev/null 2>&1 || true
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
export TASKKEEPER__GRPC_ADDR=127.0.0.1:56052
export TASKKEEPER__DATABASE_URL="postgres://postgres@127.0.0.1:5432/${db}_tasks"
export TASKKEEPER__STREAM_PREFIX="smoke$$"
export TASKKEEPER__JWKS_URL=http://127.0.0.1:56081/.well-known/jwks.json
"$bin/account" serve >"$work/account.log" 2>&1 &
pids+=($!)
wait_tcp 127.0.0.1 56051 30 || fail "account did not listen"
"$bin/taskkeeper" serve >"$work/taskkeeper.log" 2>&1 &
pids+=($!)
wait_tcp 127.0.0.1 56052 30 || fail "taskkeeper did not listen"
export GATEWAY__LISTEN_ADDR=127.0.0.1:56080
export GATEWAY__ACCOUNT_URL=http://127.0.0.1:56051 GATEWAY__TASKKEEPER_URL=http://127.0.0.1:56052
export GATEWAY__ACCOUNTING_URL=http://127.0.0.1:56053
export GATEWAY__JWKS_URL=http://127.0.0.1:56081/.well-known/jwks.json
"$bin/gateway" serve >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_tcp 127.0.0.1 56080 30 || fail "gateway did not listen"

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

# --- TaskKeeper -----------------------------------------------------------------------
RUST_LOG=warn "$bin/account" seed-demo >"$work/seed.log" 2>&1 || fail "seed-demo"
check "demo users seeded"

login() {
  g -d "{\"username\":\"$1\",\"password\":\"$2\"}" 127.0.0.1:56051 popug.account.v1.AuthService/Login |
    jq -r .tokens.accessToken
}
worker="$(login worker1 popug-worker1)"
manager="$(login manager popug-manager)"
tk() { local token="$1"; shift; g -H "authorization: Bearer $token" "$@"; }

# TaskKeeper learns the users from the account bus; wait until it can assign.
created=""
for _ in $(seq 1 150); do
  if created="$(tk "$worker" -d '{"title":"Feed the parrots","jiraId":"UBERPOP-42","description":"twice"}' \
    127.0.0.1:56052 popug.tasks.v1.TaskService/CreateTask 2>"$work/create.err")"; then
    break
  fi
  grep -q FailedPrecondition "$work/create.err" || fail "CreateTask: $(cat "$work/create.err")"
  created=""
  sleep 0.1
done
[[ -n "$created" ]] || fail "TaskKeeper never learned an assignable user"
task_id="$(jq -r .task.id <<<"$created")"
assignee="$(jq -r .task.assigneeId <<<"$created")"
[[ "$(jq -r .task.jiraId <<<"$created")" == UBERPOP-42 ]] || fail "created $created"
check "a worker creates a task; it is assigned at once"

# Whoever got it completes it (the demo passwords are popug-<username>).
admin="$(login admin smoke-admin-pw)"
owner="$(tk "$admin" -d "{\"id\":\"$assignee\"}" 127.0.0.1:56051 popug.account.v1.AccountService/GetAccount |
  jq -r .account.username)"
case "$owner" in worker[1-5] | accountant) ;; *) fail "task assigned to $owner, who may not get tasks" ;; esac
owner_token="$(login "$owner" "popug-$owner")"
done_task="$(tk "$owner_token" -d "{\"id\":\"$task_id\"}" 127.0.0.1:56052 popug.tasks.v1.TaskService/CompleteTask)" ||
  fail "CompleteTask by the assignee"
[[ "$(jq -r .task.status <<<"$done_task")" == TASK_STATUS_DONE ]] || fail "completed: $done_task"
check "the assignee ($owner) completes it"

tk "$worker" -d '{"title":"Buy seeds"}' 127.0.0.1:56052 popug.tasks.v1.TaskService/CreateTask >/dev/null || fail "second task"
moved="$(tk "$manager" 127.0.0.1:56052 popug.tasks.v1.TaskService/ReassignOpenTasks)" || fail "reassign"
[[ "$(jq -r .reassigned <<<"$moved")" == 1 ]] || fail "reassign moved: $moved (expected the one open task)"
check "a manager reassigns the open tasks (done ones stay)"

if tk "$worker" 127.0.0.1:56052 popug.tasks.v1.TaskService/ReassignOpenTasks >/dev/null 2>"$work/denied.txt"; then
  fail "a worker reassigned"
fi
grep -q PermissionDenied "$work/denied.txt" || fail "expected PermissionDenied, got $(cat "$work/denied.txt")"
if tk "$worker" -d '{"title":"[UBERPOP-1] - old style"}' 127.0.0.1:56052 popug.tasks.v1.TaskService/CreateTask \
  >/dev/null 2>"$work/invalid.txt"; then
  fail "a title with brackets was accepted"
fi
grep -q 'InvalidArgument' "$work/invalid.txt" && grep -q 'title' "$work/invalid.txt" ||
  fail "expected InvalidArgument naming title, got $(cat "$work/invalid.txt")"
check "permissions and input rules hold (PermissionDenied, InvalidArgument naming the field)"

# --- Gateway: the same system through its one public port ------------------------------
GW=127.0.0.1:56080
services="$(g $GW list)"
for s in popug.account.v1.AuthService popug.account.v1.AccountService popug.tasks.v1.TaskService grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "the gateway's reflection does not list $s: $services"
done
g $GW describe popug.tasks.v1.TaskService.CreateTask | grep -q CreateTaskRequest || fail "describe via gateway"
check "grpcurl list/describe against the gateway alone"

gw_token="$(g -d '{"username":"worker1","password":"popug-worker1"}' $GW popug.account.v1.AuthService/Login |
  jq -r .tokens.accessToken)"
[[ "$(g -H "authorization: Bearer $gw_token" $GW popug.account.v1.AccountService/WhoAmI | jq -r .account.username)" == worker1 ]] ||
  fail "WhoAmI through the gateway"
g -H "authorization: Bearer $gw_token" -d '{"title":"Via the gateway"}' $GW popug.tasks.v1.TaskService/CreateTask |
  jq -e .task.id >/dev/null || fail "CreateTask through the gateway"
check "log in, WhoAmI and CreateTask through the gateway"

if g -H "authorization: Bearer $gw_token" $GW popug.account.v1.AccountService/ListAccounts >/dev/null 2>"$work/gwdenied.txt"; then
  fail "a worker listed accounts through the gateway"
fi
grep -q PermissionDenied "$work/gwdenied.txt" || fail "expected PermissionDenied, got $(cat "$work/gwdenied.txt")"
for _ in $(seq 1 50); do
  g -d '{"service":"popug.tasks.v1.TaskService"}' $GW grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"' && break
  sleep 0.1
done
g -d '{"service":"popug.tasks.v1.TaskService"}' $GW grpc.health.v1.Health/Check | grep -q '"SERVING"' ||
  fail "gateway health for TaskService"
check "the gateway refuses by policy and reports each service's health"

echo "smoke: $passed passed, 0 failed"
