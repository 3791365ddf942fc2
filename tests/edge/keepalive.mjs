// grpc-web over HTTP/1.1 keep-alive with Node's own HTTP client (what
// @connectrpc/connect-node's grpc-web transport runs on): 20 calls on one socket,
// every other one refused by the gateway itself (no token), each with a request body.
// Every answer must carry a grpc-status and the socket must be reused throughout (it was
// closed after a refusal without reading the body: EPIPE on the next call).
//
// usage: node keepalive.mjs HOST:PORT      prints one line; exits 1 on a failure
import http from "node:http";

const [host, port] = process.argv[2].split(":");
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
// One grpc-web frame holding an empty message.
const frame = Buffer.from([0, 0, 0, 0, 0]);

function call(path, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, path, method: "POST", agent, headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...headers } },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const body = Buffer.concat(chunks);
          // grpc-status in the headers (trailers-only) or in the trailer frame (flag 0x80).
          let status = res.headers["grpc-status"];
          for (let i = 0; status === undefined && i + 5 <= body.length; ) {
            const len = body.readUInt32BE(i + 1);
            if (body[i] & 0x80) status = /grpc-status:\s*(\d+)/.exec(body.subarray(i + 5, i + 5 + len).toString())?.[1];
            i += 5 + len;
          }
          resolve({ http: res.statusCode, status, reused: req.reusedSocket });
        });
      },
    );
    req.on("error", reject);
    req.end(frame);
  });
}

const results = [];
try {
  for (let i = 0; i < 20; i++) {
    results.push(
      i % 2
        ? { want: "16", ...(await call("/popug.account.v1.AccountService/WhoAmI", {})) }
        : { want: "0", ...(await call("/popug.account.v1.AuthService/GetJwks", {})) },
    );
  }
} catch (error) {
  console.log(`FAIL - node http keep-alive: call ${results.length + 1} of 20 failed: ${error.code ?? error.message}`);
  process.exit(1);
}
const wrong = results.filter((r) => r.http !== 200 || r.status !== r.want);
const reused = results.filter((r) => r.reused).length;
const ok = wrong.length === 0 && reused === 19;
console.log(
  `${ok ? "ok" : "FAIL"} - node http keep-alive: 20 grpc-web calls (10 refused), ${reused} on a reused socket; wrong answers: ${JSON.stringify(wrong)}`,
);
process.exit(ok ? 0 : 1);
