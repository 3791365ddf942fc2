#!/usr/bin/env bash
# tests/edge/run.sh HOST:PORT TOKEN — the gateway's edge through clients this project did
# not write, where the bugs of issue 12 were seen: curl (grpc-web-text with the caller's
# Content-Length), Node's HTTP/1.1 keep-alive client (refusals must not break the
# connection) and Python grpcio (large tokens must not break the connection).
# Prints "ok - ..." per check; exits non-zero on the first failure.
set -euo pipefail
gw="${1:?usage: tests/edge/run.sh HOST:PORT TOKEN}" token="${2:?usage: tests/edge/run.sh HOST:PORT TOKEN}"
cd "$(dirname "$0")/../.."
here=tests/edge
# shellcheck source=deploy/infra.sh
. deploy/infra.sh
ensure_node
ensure_pip_tool grpcio 1.76.0

# grpc-web-text, sent with Content-Length (the base64 length): GetTask of a malformed id
# must be the service's INVALID_ARGUMENT, not UNAVAILABLE. Both ask for a text answer (Accept), as
# the grpc-web JavaScript client does in its default text mode.
body="$(printf '\x00\x00\x00\x00\x05\x0a\x03abc' | base64)"
status="$(curl -s --http1.1 -H 'content-type: application/grpc-web-text' -H 'accept: application/grpc-web-text' -H "authorization: Bearer $token" \
  --data-binary "$body" -D - -o /dev/null "http://$gw/popug.tasks.v1.TaskService/GetTask" |
  tr -d '\r' | sed -n 's/^grpc-status: //p')"
[[ "$status" == 3 ]] || { echo "FAIL - curl grpc-web-text GetTask: grpc-status '$status' (want 3)"; exit 1; }
echo "ok - curl grpc-web-text with Content-Length: GetTask answers INVALID_ARGUMENT (3)"

# grpc-web-text Login: a whole answer whose trailer frame says grpc-status 0.
printf '\x00\x00\x00\x00\x18\x0a\x07worker1\x12\x0dpopug-worker1' | base64 -w0 |
  curl -s --http1.1 -H 'content-type: application/grpc-web-text' -H 'accept: application/grpc-web-text' --data-binary @- \
    "http://$gw/popug.account.v1.AuthService/Login" >"${TMPDIR:-/tmp}/edge-login.$$"
# The answer is base64 chunks, one per frame, each padded: decode them one by one.
python3 - "${TMPDIR:-/tmp}/edge-login.$$" <<'PY' || { rm -f "${TMPDIR:-/tmp}/edge-login.$$"; echo "FAIL - curl grpc-web-text Login"; exit 1; }
import base64, re, sys
text = open(sys.argv[1]).read().strip()
raw = b"".join(base64.b64decode(c) for c in re.findall(r"[A-Za-z0-9+/]+=*", text))
frames, i = [], 0
while i + 5 <= len(raw):
    n = int.from_bytes(raw[i + 1:i + 5], "big")
    frames.append((raw[i], raw[i + 5:i + 5 + n]))
    i += 5 + n
data = [f for flag, f in frames if not flag & 0x80]
trailers = b"".join(f for flag, f in frames if flag & 0x80).decode()
sys.exit(0 if data and data[0] and "grpc-status:0" in trailers.replace(" ", "") else 1)
PY
rm -f "${TMPDIR:-/tmp}/edge-login.$$"
echo "ok - curl grpc-web-text with Content-Length: Login answers with its message and grpc-status 0"

node "$here/keepalive.mjs" "$gw"
"$POPUG_TOOLS_VENV/bin/python" "$here/big_tokens.py" "$gw"
