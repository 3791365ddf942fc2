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
cargo build --locked --quiet -p account -p taskkeeper -p accounting -p gateway

. tests/mesh.sh
fail() { mesh_fail "$@"; }
work="$MESH_WORK"
# Payout e-mails go to a maildev inbox of the test's own.
ensure_maildev 26025 26026 "$work/maildev.pid"
MESH_PIDS+=("$(cat "$work/maildev.pid")")
export ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD=smoke-admin-pw
export ACCOUNTING__SMTP_HOST=127.0.0.1 ACCOUNTING__SMTP_PORT=26025
mesh_start "popug_smoke_$$" 26000

g() { "$GRPCURL" -plaintext "$@"; }
passed=0
check() { passed=$((passed + 1)); echo "ok - $*"; }

services="$(g "$ACCOUNT_ADDR" list)"
for s in popug.account.v1.AccountService popug.account.v1.AuthService grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "reflection does not list $s: $services"
done
check "grpcurl list shows the services"

g "$ACCOUNT_ADDR" describe popug.account.v1.AuthService.Login | grep -q 'LoginRequest' || fail "describe"
check "grpcurl describe works"

for s in popug.account.v1.AuthService popug.account.v1.AccountService; do
  g -d "{\"service\":\"$s\"}" "$ACCOUNT_ADDR" grpc.health.v1.Health/Check | grep -q SERVING || fail "health $s"
done
check "health says SERVING"

login="$(g -d '{"username":"admin","password":"smoke-admin-pw"}' "$ACCOUNT_ADDR" popug.account.v1.AuthService/Login)" ||
  fail "login"
token="$(jq -r .tokens.accessToken <<<"$login")"
[[ -n "$token" && "$token" != null ]] || fail "no access token in $login"
check "the bootstrap admin logs in"

kid="$(cut -d. -f1 <<<"$token" | tr '_-' '/+' | base64 -d 2>/dev/null | jq -r .kid)" || true
curl -fsS $JWKS_URL | jq -e --arg kid "$kid" '.keys | map(.kid) | index($kid)' >/dev/null ||
  fail "kid $kid not in the JWKS"
check "the token's kid ($kid) is published in the JWKS"

me="$(g -H "authorization: Bearer $token" "$ACCOUNT_ADDR" popug.account.v1.AccountService/WhoAmI)" || fail "WhoAmI"
[[ "$(jq -r .account.username <<<"$me")" == admin ]] || fail "WhoAmI answered $me"
check "the service verifies the token (WhoAmI)"

if g "$ACCOUNT_ADDR" popug.account.v1.AccountService/WhoAmI >/dev/null 2>"$work/denied.txt"; then
  fail "WhoAmI without a token succeeded"
fi
grep -q Unauthenticated "$work/denied.txt" || fail "expected Unauthenticated, got $(cat "$work/denied.txt")"
check "no token, no call"

# --- TaskKeeper -----------------------------------------------------------------------
RUST_LOG=warn "$bin/account" seed-demo >"$work/seed.log" 2>&1 || fail "seed-demo"
check "demo users seeded"

login() {
  g -d "{\"username\":\"$1\",\"password\":\"$2\"}" "$ACCOUNT_ADDR" popug.account.v1.AuthService/Login |
    jq -r .tokens.accessToken
}
worker="$(login worker1 popug-worker1)"
manager="$(login manager popug-manager)"
tk() { local token="$1"; shift; g -H "authorization: Bearer $token" "$@"; }

# TaskKeeper learns the users from the account bus; wait until it can assign.
created=""
for _ in $(seq 1 150); do
  if created="$(tk "$worker" -d '{"title":"Feed the parrots","jiraId":"UBERPOP-42","description":"twice"}' \
    "$TASKS_ADDR" popug.tasks.v1.TaskService/CreateTask 2>"$work/create.err")"; then
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
owner="$(tk "$admin" -d "{\"id\":\"$assignee\"}" "$ACCOUNT_ADDR" popug.account.v1.AccountService/GetAccount |
  jq -r .account.username)"
case "$owner" in worker[1-5] | accountant) ;; *) fail "task assigned to $owner, who may not get tasks" ;; esac
owner_token="$(login "$owner" "popug-$owner")"
done_task="$(tk "$owner_token" -d "{\"id\":\"$task_id\"}" "$TASKS_ADDR" popug.tasks.v1.TaskService/CompleteTask)" ||
  fail "CompleteTask by the assignee"
[[ "$(jq -r .task.status <<<"$done_task")" == TASK_STATUS_DONE ]] || fail "completed: $done_task"
check "the assignee ($owner) completes it"

tk "$worker" -d '{"title":"Buy seeds"}' "$TASKS_ADDR" popug.tasks.v1.TaskService/CreateTask >/dev/null || fail "second task"
moved="$(tk "$manager" "$TASKS_ADDR" popug.tasks.v1.TaskService/ReassignOpenTasks)" || fail "reassign"
[[ "$(jq -r .reassigned <<<"$moved")" == 1 ]] || fail "reassign moved: $moved (expected the one open task)"
check "a manager reassigns the open tasks (done ones stay)"

if tk "$worker" "$TASKS_ADDR" popug.tasks.v1.TaskService/ReassignOpenTasks >/dev/null 2>"$work/denied.txt"; then
  fail "a worker reassigned"
fi
grep -q PermissionDenied "$work/denied.txt" || fail "expected PermissionDenied, got $(cat "$work/denied.txt")"
if tk "$worker" -d '{"title":"[UBERPOP-1] - old style"}' "$TASKS_ADDR" popug.tasks.v1.TaskService/CreateTask \
  >/dev/null 2>"$work/invalid.txt"; then
  fail "a title with brackets was accepted"
fi
{ grep -q 'InvalidArgument' "$work/invalid.txt" && grep -q 'title' "$work/invalid.txt"; } ||
  fail "expected InvalidArgument naming title, got $(cat "$work/invalid.txt")"
check "permissions and input rules hold (PermissionDenied, InvalidArgument naming the field)"

# --- Gateway: the same system through its one public port ------------------------------
GW=$GATEWAY_ADDR
services="$(g $GW list)"
for s in popug.account.v1.AuthService popug.account.v1.AccountService popug.tasks.v1.TaskService grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "the gateway's reflection does not list $s: $services"
done
g $GW describe popug.tasks.v1.TaskService.CreateTask | grep -q CreateTaskRequest || fail "describe via gateway"
[[ -z "$(sort <<<"$services" | uniq -d)" ]] || fail "the gateway lists a service twice: $services"
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

# --- Accounting and analytics, through the gateway ---------------------------------------
accountant="$(login accountant popug-accountant)"
gw() { local token="$1"; shift; g -H "authorization: Bearer $token" "$@"; }
# Poll a jq condition on an RPC's answer (the ledger follows the buses asynchronously).
until_jq() {
  local what="$1" filter="$2" token="$3" data="$4" method="$5" out=""
  for _ in $(seq 1 100); do
    out="$(gw "$token" -d "$data" $GW "$method" 2>/dev/null)" && jq -e "$filter" <<<"$out" >/dev/null && {
      printf '%s' "$out"
      return 0
    }
    sleep 0.1
  done
  fail "$what: last answer $out"
}

# Every task priced, via the composed board (names from Account, prices from Accounting).
board="$(until_jq "prices on the board" '(.tasks | length) == 3 and all(.tasks[]; .priced) and (.missing // [] | length) == 0' \
  "$manager" '{}' popug.gateway.v1.BoardService/GetTaskBoard)"
price() { jq -r --arg t "$1" --arg f "$2" '.tasks[] | select(.task.title == $t) | .[$f] | tonumber' <<<"$board"; }
fee_feed=$(price "Feed the parrots" assignFeeCents) reward_feed=$(price "Feed the parrots" rewardCents)
fee_seeds=$(price "Buy seeds" assignFeeCents) fee_via=$(price "Via the gateway" assignFeeCents)
# "Feed" was assigned once and completed; "Buy seeds" assigned and reassigned; "Via" once.
fees=$((fee_feed + 2 * fee_seeds + fee_via))
earnings=$((fees - reward_feed))
check "the board shows every task with its price (fees $fee_feed/$fee_seeds/$fee_via, reward $reward_feed)"

until_jq "management earnings today = fees - rewards = $earnings" \
  ".today.earningsCents // \"0\" | tonumber == $earnings" "$accountant" '{}' \
  popug.accounting.v1.AccountingService/GetManagementEarnings >/dev/null
check "management earnings today are fees minus rewards: $earnings cents"

log="$(until_jq "the completer's audit log" '[(.entries // [])[] | select(.kind == "ENTRY_KIND_COMPLETION_REWARD")] | length == 1' \
  "$owner_token" '{}' popug.accounting.v1.AccountingService/ListEntries)"
jq -e --arg t "$task_id" --argjson r "$reward_feed" '.entries[] | select(.kind == "ENTRY_KIND_COMPLETION_REWARD")
  | .taskId == $t and (.amountCents | tonumber) == $r and .jiraId == "UBERPOP-42" and .title == "Feed the parrots"' \
  <<<"$log" >/dev/null || fail "the reward entry: $log"
sum=$(jq '[.entries[].amountCents | tonumber] | add' <<<"$log")
balance=$(gw "$owner_token" $GW popug.accounting.v1.AccountingService/GetBalance | jq '.balanceCents // "0" | tonumber')
[[ "$sum" == "$balance" ]] || fail "balance $balance is not the sum of the audit log $sum"
check "the completer's audit log shows the reward with the task's jira id and title; balance = sum of entries ($balance)"

dash="$(gw "$admin" $GW popug.analytics.v1.AnalyticsService/GetDashboard)"
[[ "$(jq '.managementEarningsCents // "0" | tonumber' <<<"$dash")" == "$earnings" ]] || fail "dashboard: $dash"
top="$(gw "$admin" -d '{"period":"PERIOD_DAY"}' $GW popug.analytics.v1.AnalyticsService/GetMostExpensiveTask)"
jq -e --arg t "$task_id" --argjson r "$reward_feed" '.task.taskId == $t and (.task.rewardCents | tonumber) == $r' \
  <<<"$top" >/dev/null || fail "most expensive task: $top"
check "analytics: earnings today and the most expensive task of the day"

# Until someone is in the black, every new task is completed by whoever gets it.
ids="$(gw "$admin" -d '{"pageSize":100}' $GW popug.account.v1.AccountService/ListAccounts | jq -r '.accounts[] | "\(.id) \(.username)"')"
balances() {
  while read -r id name; do
    printf '%s %s %s\n' "$id" "$name" "$(gw "$accountant" -d "{\"userId\":\"$id\"}" $GW \
      popug.accounting.v1.AccountingService/GetBalance | jq -r '.balanceCents // "0"')"
  done <<<"$ids"
}
for round in $(seq 1 40); do
  balances >"$work/balances.txt"
  awk '$3 > 0 { found = 1 } END { exit !found }' "$work/balances.txt" && break
  extra="$(gw "$worker" -d "{\"title\":\"Extra $round\"}" $GW popug.tasks.v1.TaskService/CreateTask)"
  who="$(gw "$admin" -d "{\"id\":\"$(jq -r .task.assigneeId <<<"$extra")\"}" $GW popug.account.v1.AccountService/GetAccount | jq -r .account.username)"
  gw "$(login "$who" "popug-$who")" -d "{\"id\":\"$(jq -r .task.id <<<"$extra")\"}" $GW popug.tasks.v1.TaskService/CompleteTask >/dev/null
  # Wait for the ledger to take the reward in before looking again.
  until_jq "the extra reward in the ledger" "[(.entries // [])[] | select(.taskId == \"$(jq -r .task.id <<<"$extra")\" and .kind == \"ENTRY_KIND_COMPLETION_REWARD\")] | length == 1" \
    "$accountant" "{\"userId\":\"$(jq -r .task.assigneeId <<<"$extra")\",\"pageSize\":500}" \
    popug.accounting.v1.AccountingService/ListEntries >/dev/null
done
awk '$3 > 0 { found = 1 } END { exit !found }' "$work/balances.txt" || fail "nobody in the black after 40 tasks"

closed="$(gw "$admin" $GW popug.accounting.v1.AccountingService/CloseDay)" || fail "CloseDay"
jq -e '.closedNow == true' <<<"$closed" >/dev/null || fail "close: $closed"
paid=0
while read -r id name before; do
  after=$(gw "$accountant" -d "{\"userId\":\"$id\"}" $GW popug.accounting.v1.AccountingService/GetBalance | jq -r '.balanceCents // "0"')
  if ((before > 0)); then
    [[ "$after" == 0 ]] || fail "$name had $before, still has $after after the close"
    dollars="$(printf '%d.%02d' $((before / 100)) $((before % 100)))"
    mail=""
    for _ in $(seq 1 100); do
      mail="$(curl -fsS http://127.0.0.1:26026/api/email | jq -c --arg to "$name@popug.example" \
        '[.[] | select(.envelope.to[0].address == $to)]')"
      [[ "$(jq length <<<"$mail")" == 1 ]] && break
      sleep 0.1
    done
    [[ "$(jq length <<<"$mail")" == 1 ]] || fail "no single payout e-mail for $name: $mail"
    jq -e --arg d "\$$dollars" '.[0].subject | contains($d)' <<<"$mail" >/dev/null ||
      fail "the e-mail to $name does not say $dollars: $mail"
    paid=$((paid + 1))
  else
    [[ "$after" == "$before" ]] || fail "$name's balance $before changed to $after (carried over unchanged)"
  fi
done <"$work/balances.txt"
[[ "$(jq -r '.payouts // "0"' <<<"$closed")" == "$paid" ]] || fail "close paid $(jq -r .payouts <<<"$closed"), expected $paid"
check "CloseDay paid $paid popug(s) to zero, each got one e-mail with the amount; the rest carried over"

# A service that cannot start says why: the scripts print its error line, not only the
# tail of its log (a start failure once showed a backtrace's end and nothing else).
startup="$( (
  MESH_WORK="$(mktemp -d)" MESH_PIDS=() MESH_NAME=startup
  export ACCOUNT__GRPC_ADDR=127.0.0.1:26098 ACCOUNT__DATABASE_ACQUIRE_TIMEOUT_MS=0
  _mesh_run account 26098
) 2>&1 || true)"
if ! grep -q 'startup: FAILED: account exited before listening on 26098' <<<"$startup" ||
  ! grep -q 'ACCOUNT__DATABASE_ACQUIRE_TIMEOUT_MS.*must be positive' <<<"$startup"; then
  fail "a failed start did not print its error line: $startup"
fi
check "a service that cannot start: the script prints why (its error line)"

echo "smoke: $passed passed, 0 failed"
