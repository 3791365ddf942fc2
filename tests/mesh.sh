# shellcheck shell=bash
# tests/mesh.sh — the running mesh for the end-to-end scripts (smoke.sh, e2e.sh), as a
# bash library: source it after deploy/infra.sh and ensure_grpcurl, then
# `mesh_start NAME BASE`.
#
# mesh_start NAME BASE  creates databases NAME, NAME_tasks, NAME_money; starts Account,
#                       TaskKeeper, Accounting and the Gateway from $MESH_BIN with stream
#                       prefix NAME on ports BASE+51 (Account gRPC), +81 (JWKS and
#                       metrics), +52, +53, +80 (Gateway), +82 and +83 (TaskKeeper's and
#                       Accounting's metrics); exports ACCOUNT_ADDR, TASKS_ADDR,
#                       MONEY_ADDR, GATEWAY_ADDR, JWKS_URL and the four services' GET
#                       /metrics URLs ACCOUNT_METRICS_URL, TASKKEEPER_METRICS_URL,
#                       ACCOUNTING_METRICS_URL, GATEWAY_METRICS_URL. Set the services'
#                       own variables (ACCOUNTING__SMTP_PORT, GATEWAY__WEB_DIR, ...)
#                       before calling it.
# mesh_fail MESSAGE     prints MESSAGE, the error and the last lines of every log; exits.
# mesh_stop             stops everything mesh_start started and drops its databases
#                       (installed as the EXIT trap by mesh_start).
#
# BASE must keep every port below the kernel's ephemeral range (32768 and up): a port in
# it can be taken at any moment by some program's outgoing connection.

MESH_BIN="${MESH_BIN:-${CARGO_TARGET_DIR:-target}/debug}"
MESH_WORK="$(mktemp -d)"
MESH_PIDS=()
MESH_DBS=()

mesh_stop() {
  local pid db
  for pid in "${MESH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${MESH_DBS[@]}"; do
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
      >/dev/null 2>&1 || true
  done
  rm -rf "$MESH_WORK"
}

mesh_fail() {
  local log
  echo "${MESH_NAME:-mesh}: FAILED: $*" >&2
  for log in "$MESH_WORK"/*.log; do
    [[ -e "$log" ]] || continue
    echo "--- $log" >&2
    # The reason a service stopped is its first error line, which a backtrace would
    # otherwise push out of the tail.
    grep -m 3 -E '^Error|ERROR|panicked' "$log" >&2 || true
    tail -n 20 "$log" >&2
  done
  exit 1
}

# _mesh_run NAME PORT [SERVICE]: starts service NAME, waits until PORT accepts connections
# and, given the gRPC SERVICE it serves, until its health check says SERVING (a service
# listens at once and reports NOT_SERVING until its database and NATS are ready); fails
# at once, with its error, if the process ends first.
_mesh_run() {
  local name="$1" port="$2" service="${3:-}" pid deadline=$((SECONDS + 60))
  "$MESH_BIN/$name" serve >"$MESH_WORK/$name.log" 2>&1 &
  pid=$!
  MESH_PIDS+=("$pid")
  until _infra_tcp_open 127.0.0.1 "$port"; do
    kill -0 "$pid" 2>/dev/null || mesh_fail "$name exited before listening on $port"
    ((SECONDS < deadline)) || mesh_fail "$name did not listen on $port within 60 s"
    sleep 0.1
  done
  [[ -n "$service" ]] || return 0
  until "$GRPCURL" -plaintext -d "{\"service\":\"$service\"}" "127.0.0.1:$port" \
    grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'; do
    kill -0 "$pid" 2>/dev/null || mesh_fail "$name exited before it was SERVING"
    ((SECONDS < deadline)) || mesh_fail "$name was not SERVING within 60 s"
    sleep 0.1
  done
}

mesh_start() {
  MESH_NAME="$1"
  local base="$2" port db
  trap mesh_stop EXIT
  for port in $((base + 51)) $((base + 52)) $((base + 53)) $((base + 80)) $((base + 81)) \
    $((base + 82)) $((base + 83)); do
    if _infra_tcp_open 127.0.0.1 "$port"; then
      mesh_fail "port $port is already in use (another run still up?)"
    fi
  done
  MESH_DBS=("$MESH_NAME" "${MESH_NAME}_tasks" "${MESH_NAME}_money")
  for db in "${MESH_DBS[@]}"; do
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
  done
  export ACCOUNT_ADDR="127.0.0.1:$((base + 51))" TASKS_ADDR="127.0.0.1:$((base + 52))"
  export MONEY_ADDR="127.0.0.1:$((base + 53))" GATEWAY_ADDR="127.0.0.1:$((base + 80))"
  export JWKS_URL="http://127.0.0.1:$((base + 81))/.well-known/jwks.json"
  # GET /metrics of each: Account beside its JWKS, the gateway on its public port,
  # TaskKeeper and Accounting on ports of their own.
  export ACCOUNT_METRICS_URL="http://127.0.0.1:$((base + 81))/metrics"
  export TASKKEEPER_METRICS_URL="http://127.0.0.1:$((base + 82))/metrics"
  export ACCOUNTING_METRICS_URL="http://127.0.0.1:$((base + 83))/metrics"
  export GATEWAY_METRICS_URL="http://$GATEWAY_ADDR/metrics"
  # Errors print their cause chain; a backtrace would bury it.
  export RUST_LIB_BACKTRACE=0
  local pg=postgres://postgres@127.0.0.1:5432
  export ACCOUNT__GRPC_ADDR="$ACCOUNT_ADDR" ACCOUNT__HTTP_ADDR="127.0.0.1:$((base + 81))"
  export ACCOUNT__DATABASE_URL="$pg/$MESH_NAME" ACCOUNT__STREAM_PREFIX="$MESH_NAME"
  export ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD="${ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD:-popug-admin}"
  export TASKKEEPER__GRPC_ADDR="$TASKS_ADDR" TASKKEEPER__JWKS_URL="$JWKS_URL"
  export TASKKEEPER__DATABASE_URL="$pg/${MESH_NAME}_tasks" TASKKEEPER__STREAM_PREFIX="$MESH_NAME"
  export TASKKEEPER__METRICS_ADDR="127.0.0.1:$((base + 82))"
  export ACCOUNTING__GRPC_ADDR="$MONEY_ADDR" ACCOUNTING__JWKS_URL="$JWKS_URL"
  export ACCOUNTING__DATABASE_URL="$pg/${MESH_NAME}_money" ACCOUNTING__STREAM_PREFIX="$MESH_NAME"
  export ACCOUNTING__METRICS_ADDR="127.0.0.1:$((base + 83))"
  export GATEWAY__LISTEN_ADDR="$GATEWAY_ADDR" GATEWAY__JWKS_URL="$JWKS_URL"
  export GATEWAY__ACCOUNT_URL="http://$ACCOUNT_ADDR" GATEWAY__TASKKEEPER_URL="http://$TASKS_ADDR"
  export GATEWAY__ACCOUNTING_URL="http://$MONEY_ADDR"
  export GATEWAY__STREAM_PREFIX="$MESH_NAME" GATEWAY__CACHE_PREFIX="popug:$MESH_NAME:"
  _mesh_run account $((base + 51)) popug.account.v1.AuthService
  _mesh_run taskkeeper $((base + 52)) popug.tasks.v1.TaskService
  _mesh_run accounting $((base + 53)) popug.accounting.v1.AccountingService
  _mesh_run gateway $((base + 80))
}
