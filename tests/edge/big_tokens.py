"""Large bearer tokens against the gateway with Python grpcio (a client this project did
not write): 16, 32 and 64 KiB tokens must answer UNAUTHENTICATED, and the same channel
must go on working after each (it was HTTP 431 -> UNKNOWN, and a GOAWAY that closed the
connection -> UNAVAILABLE).

usage: python big_tokens.py HOST:PORT      prints one line per check; exits 1 on a failure
"""

import sys

import grpc

target = sys.argv[1]
channel = grpc.insecure_channel(target)
raw = lambda b: b  # noqa: E731 - requests and answers as raw bytes, no generated code
who_am_i = channel.unary_unary(
    "/popug.account.v1.AccountService/WhoAmI", request_serializer=raw, response_deserializer=raw
)
get_jwks = channel.unary_unary(
    "/popug.account.v1.AuthService/GetJwks", request_serializer=raw, response_deserializer=raw
)
failed = 0
get_jwks(b"", timeout=10)
for kib in (16, 32, 64):
    token = "a" * (kib * 1024)
    try:
        who_am_i(b"", metadata=[("authorization", f"Bearer {token}")], timeout=10)
        code, message = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, message = error.code(), error.details()
    ok = code == grpc.StatusCode.UNAUTHENTICATED
    # The same channel (the same HTTP/2 connection, unless it was closed) still works.
    try:
        get_jwks(b"", timeout=10)
        after = "the channel still works"
    except grpc.RpcError as error:
        ok, after = False, f"the next call failed: {error.code()}"
    failed += not ok
    print(f"{'ok' if ok else 'FAIL'} - grpcio, {kib} KiB token: {code.name} {message!r}; {after}")
sys.exit(1 if failed else 0)
