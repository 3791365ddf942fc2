#!/usr/bin/env bash
# tests/smoke.sh — the built binaries end to end, driven only by grpcurl and curl as a user
# would: reflection lists the services, health says SERVING, the bootstrap admin logs in,
# the token's kid is in the published JWKS and the service accepts the token; the demo
# users are seeded, a worker creates a task, its assignee completes it, a manager
# reassigns, and the permission and input rules hold. Then every service's GET /metrics:
# clean for `promtool check metrics`, every metric family of its catalog there, and the
# calls made above counted; and a real Prometheus scraping the four, evaluating the alert
# rules and running the dashboard's queries (docs/operations.md).
# Isolated: its own database, stream prefix and ports; everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/infra.sh
ensure_grpcurl
ensure_prometheus
ensure_pip_tool PyYAML 6.0.4 # for tests/observability/promcheck.py

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
gw_creates=1 # tasks created through the gateway (the metrics below count them)
check "log in, WhoAmI and CreateTask through the gateway"

# The edge through clients this project did not write, where its bugs were seen: curl
# (grpc-web-text with the caller's Content-Length), Node's HTTP/1.1 keep-alive client
# (refusals keep the connection) and Python grpcio (large tokens keep the connection).
bash tests/edge/run.sh "$GW" "$gw_token" | tee "$work/edge.txt" ||
  fail "the edge through outside clients: $(tail -1 "$work/edge.txt")"
check "the edge through outside clients: curl grpc-web-text, Node keep-alive, grpcio large tokens"

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
  gw_creates=$((gw_creates + 1))
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

# --- Metrics: every service's GET /metrics, then a real Prometheus scraping them ----------
promcheck() { "$POPUG_TOOLS_VENV/bin/python" tests/observability/promcheck.py "$@"; }
declare -A metrics_url=([account]="$ACCOUNT_METRICS_URL" [taskkeeper]="$TASKKEEPER_METRICS_URL"
  [accounting]="$ACCOUNTING_METRICS_URL" [gateway]="$GATEWAY_METRICS_URL")
mesh_services=(account taskkeeper accounting gateway)

for s in "${mesh_services[@]}"; do
  curl -fsS "${metrics_url[$s]}" >"$work/$s.metrics" || fail "GET ${metrics_url[$s]}"
  lint="$(promtool check metrics <"$work/$s.metrics" 2>&1)" || lint="${lint:-promtool check metrics failed}"
  [[ -z "$lint" ]] || fail "promtool check metrics on $s's ${metrics_url[$s]}: $lint"
done
check "promtool check metrics finds nothing to say about any of the four /metrics"

# at_least URL MIN NAME [LABEL=VALUE...]: until the sum of those samples at URL is at least
# MIN (the ledger's totals are read every 15 s, the consumers' lag every few seconds);
# sets `got` to it. Fails after 30 s.
at_least() {
  local url="$1" min="$2"
  shift 2
  got=""
  for _ in $(seq 1 150); do
    got="$(curl -fsS "$url" | promcheck value "$@" || true)"
    [[ -n "$got" ]] && awk -v v="$got" -v m="$min" 'BEGIN { exit !(v >= m) }' && return 0
    sleep 0.2
  done
  fail "$url: $* is ${got:-absent}, expected at least $min"
}
tasks=(grpc_service=popug.tasks.v1.TaskService)
direct_creates=2 # "Feed the parrots" and "Buy seeds", straight to TaskKeeper
at_least "$TASKKEEPER_METRICS_URL" $((direct_creates + gw_creates)) grpc_server_handled_total \
  "${tasks[@]}" grpc_method=CreateTask grpc_code=OK
tk_creates=$got
at_least "$TASKKEEPER_METRICS_URL" 1 grpc_server_handled_total "${tasks[@]}" grpc_method=CreateTask grpc_code=InvalidArgument
at_least "$TASKKEEPER_METRICS_URL" 1 grpc_server_handled_total "${tasks[@]}" grpc_method=ReassignOpenTasks grpc_code=PermissionDenied
at_least "$TASKKEEPER_METRICS_URL" 8 eventbus_consumer_processed_total consumer=taskkeeper-users
check "TaskKeeper counted $tk_creates CreateTask OK (${direct_creates} direct + $gw_creates via the gateway), the InvalidArgument," \
  "the PermissionDenied, and the account events its consumer took"

at_least "$GATEWAY_METRICS_URL" "$gw_creates" grpc_server_handled_total "${tasks[@]}" grpc_method=CreateTask grpc_code=OK
at_least "$GATEWAY_METRICS_URL" "$gw_creates" grpc_client_handled_total "${tasks[@]}" grpc_method=CreateTask grpc_code=OK
at_least "$GATEWAY_METRICS_URL" 1 grpc_server_handled_total grpc_service=popug.account.v1.AccountService \
  grpc_method=ListAccounts grpc_code=PermissionDenied
at_least "$GATEWAY_METRICS_URL" 1 gateway_refused_total reason=permission_denied
check "the gateway counted $gw_creates CreateTask OK as server and as client, and its PermissionDenied refusal"

# Assignments: "Feed" once, "Buy seeds" twice (created, reassigned), each gateway task once.
at_least "$ACCOUNTING_METRICS_URL" $((3 + gw_creates)) accounting_ledger_entries_total kind=assign_fee
fees_booked=$got
at_least "$ACCOUNTING_METRICS_URL" "$gw_creates" accounting_ledger_entries_total kind=completion_reward
at_least "$ACCOUNTING_METRICS_URL" "$paid" accounting_ledger_entries_total kind=payout
at_least "$ACCOUNTING_METRICS_URL" 1 accounting_ledger_cents_total kind=assign_fee
at_least "$ACCOUNTING_METRICS_URL" 1 accounting_day_closes_total
at_least "$ACCOUNTING_METRICS_URL" "$paid" accounting_payout_mails_total status=sent
at_least "$ACCOUNTING_METRICS_URL" 1 accounting_last_closed_day_timestamp_seconds
check "Accounting counted $fees_booked assign fees, the rewards, $paid payout(s) and their e-mails, and the day close"

# Again, now that the ledger's totals and the consumers' lag have been read: every family.
absent=""
for s in "${mesh_services[@]}"; do
  curl -fsS "${metrics_url[$s]}" >"$work/$s.metrics" || fail "GET ${metrics_url[$s]}"
  promcheck families "$s" <"$work/$s.metrics" >/dev/null 2>"$work/families.txt" ||
    absent+="$(cat "$work/families.txt")"$'\n'
done
[[ -z "$absent" ]] || fail "metric families missing (a counter must exist at 0 from the start):"$'\n'"$absent"
check "each service exposes every metric family docs/operations.md gives it"

for s in "${mesh_services[@]}"; do
  [[ "$(promcheck value popug_serving <"$work/$s.metrics" || true)" == 1 ]] || fail "$s: popug_serving is not 1"
  [[ "$(promcheck value popug_build_info "service=$s" <"$work/$s.metrics" || true)" == 1 ]] ||
    fail "$s: no popug_build_info{service=\"$s\"} 1"
done
check "every service says popug_serving 1 and its popug_build_info"

# A real Prometheus: the four targets every second, the alert rules of deploy/observability.
prom_port=26090
prom="http://127.0.0.1:$prom_port"
_infra_tcp_open 127.0.0.1 $prom_port && fail "port $prom_port is already in use (another run still up?)"
mkdir -p "$work/prometheus"
{
  printf 'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n'
  printf 'rule_files:\n  - %s\n' "$PWD/deploy/observability/alerts.yml"
  printf 'scrape_configs:\n'
  for s in "${mesh_services[@]}"; do
    target="${metrics_url[$s]#http://}"
    printf '  - job_name: %s\n    static_configs:\n      - targets: ["%s"]\n' "$s" "${target%/metrics}"
  done
} >"$work/prometheus/prometheus.yml"
prometheus --config.file="$work/prometheus/prometheus.yml" --storage.tsdb.path="$work/prometheus/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
MESH_PIDS+=("$!")
# Until it is ready it answers 503; its discovery hands the targets over after ~5 s.
all_up() {
  [[ -n "$targets" ]] && # jq -e takes no input for success
    jq -e '[.data.activeTargets[] | select(.health == "up")] | length == 4' <<<"$targets" >/dev/null 2>&1
}
targets=""
for _ in $(seq 1 150); do
  targets="$(curl -fsS "$prom/api/v1/targets" 2>/dev/null || true)"
  all_up && break
  sleep 0.2
done
all_up ||
  fail "Prometheus on $prom: not every target up: $(jq -c '[.data.activeTargets[]? | {job: .labels.job, health, lastError}]' <<<"$targets" 2>/dev/null || echo "$targets")"
check "Prometheus scrapes the four services: every target up"

query() { curl -fsS --get "$prom/api/v1/query" --data-urlencode "query=$1"; }
red="$(query 'sum by (grpc_method) (grpc_server_handled_total{job="taskkeeper",grpc_service="popug.tasks.v1.TaskService"})')" ||
  fail "the RED query"
for method in CreateTask CompleteTask ReassignOpenTasks; do
  jq -e --arg m "$method" '.data.result[] | select(.metric.grpc_method == $m) | .value[1] | tonumber > 0' \
    <<<"$red" >/dev/null || fail "Prometheus has no $method calls: $red"
done
via_prom="$(jq -r '.data.result[] | select(.metric.grpc_method == "CreateTask") | .value[1]' <<<"$red")"
((via_prom >= tk_creates)) || fail "Prometheus counts $via_prom CreateTask calls, TaskKeeper said $tk_creates OK ones"
p99="$(query 'histogram_quantile(0.99, sum by (le) (grpc_server_handling_seconds_bucket{job="taskkeeper",grpc_method="CreateTask"}))' |
  jq -r '.data.result[0].value[1] // "none"')"
awk -v v="$p99" 'BEGIN { exit !(v + 0 > 0 && v + 0 < 30) }' || fail "CreateTask p99 from Prometheus: $p99"
check "Prometheus answers RED queries: $via_prom CreateTask calls, also CompleteTask and ReassignOpenTasks; CreateTask p99 ${p99}s"

promcheck live "$prom" deploy/observability/alerts.yml deploy/observability/grafana/dashboards/popugjira.json \
  >"$work/live.txt" 2>&1 || fail "$(cat "$work/live.txt")"
check "on the live data: $(tail -n 1 "$work/live.txt")"

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
