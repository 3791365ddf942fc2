#!/usr/bin/env bash
# deploy/sqlx.sh — the SQL of every crate is checked at compile time (sqlx::query! and
# friends) against the schema its migrations build. Builds (CI included) read the
# committed query metadata in each crate's .sqlx/; this script keeps it in step.
#
#   bash deploy/sqlx.sh check     fail when any crate's .sqlx/ is stale (the test command)
#   bash deploy/sqlx.sh prepare   after changing a query or a migration: rewrite .sqlx/
#   bash deploy/sqlx.sh env       write each crate's .env (git ignores it) so the macros
#                                 check against a live, migrated database while you edit
#
# Each crate gets its own database popug_sqlx_<crate> with its migrations and the shared
# ones (schemas eventbus and idempotency), rebuilt on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/infra.sh
. deploy/infra.sh

mode="${1:-check}"
case "$mode" in
  check | prepare | env) ;;
  *)
    echo "usage: deploy/sqlx.sh [check | prepare | env]" >&2
    exit 2
    ;;
esac

ensure_rust
ensure_postgres
[[ "$mode" == env ]] || ensure_sqlx_cli

# crate directories with queries (the platform ones bring only the shared schemas)
crates=(platform/eventbus platform/idempotency account taskkeeper accounting)

psql_q() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }

# migrated_db DIR: a fresh database with the shared migrations and DIR's own; prints
# its URL.
migrated_db() {
  local dir="$1" name
  name="popug_sqlx_$(basename "$dir")"
  psql_q -d postgres -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null
  {
    for shared in eventbus idempotency; do
      echo "CREATE SCHEMA $shared; SET search_path TO $shared;"
      cat "platform/$shared/migrations/"*.sql
      echo "RESET search_path;"
    done
    if [[ "$dir" != platform/* ]]; then cat "$dir"/migrations/*.sql; fi
  } | psql_q -d "$name" >/dev/null
  echo "postgres://postgres@127.0.0.1:5432/$name"
}

# A service crate's metadata also holds the queries of the shared crates it builds (a
# fresh build compiles them and sqlx-cli records them): touch those so a warm build
# recompiles them too and every machine writes and checks the same set.
shared_sources=(platform/eventbus/src/lib.rs platform/idempotency/src/lib.rs)

status=0
for dir in "${crates[@]}"; do
  url="$(migrated_db "$dir")"
  [[ "$dir" == platform/* ]] || touch "${shared_sources[@]}"
  case "$mode" in
    env)
      echo "DATABASE_URL=$url" >"$dir/.env"
      echo "sqlx: $dir/.env -> $url"
      ;;
    prepare)
      (cd "$dir" && DATABASE_URL="$url" cargo sqlx prepare -- --all-targets --quiet)
      ;;
    check)
      if ! (cd "$dir" && DATABASE_URL="$url" cargo sqlx prepare --check -- --all-targets --quiet); then
        echo "sqlx: $dir/.sqlx is stale: run 'bash deploy/sqlx.sh prepare' and commit it" >&2
        status=1
      fi
      ;;
  esac
done
exit "$status"
