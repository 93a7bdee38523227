// Sockets that lose their gateway, on the real socket.io-client from npm (the web client's copy),
// with its reconnection as it comes (default backoff and jitter) and connection-state recovery:
// bench/recovery_bench.py kills the node they are on and counts what each socket receives.
//
// Usage: node bench/node/recovery_generator.mjs --plan PLAN.json --out OUT.json
// PLAN: {url, cookie, localAddresses: [...], users: [{id, token}]}. Every socket goes to `url`
// (the edge) with `cookie` (haproxy's SIO_NODE, which puts it on the node to be killed) from
// one of `localAddresses` (127.0.0.x: the edge lets one address hold at most 100 connections).
// Websocket transport only (no long-polling first: the edge's stickiness would otherwise need
// a cookie jar), everything else socket.io-client's defaults.
// The exchange with the bench (bench/measure.py, Generators), a word a line: "ready" once every
// socket is connected, then waits; on "expect PATH" (PATH: {userId: [texts]}) waits until every
// socket has received its texts (at most 30 s), says "done" and waits for "exit".
import { io, option, plan, reached } from "./generator_steps.mjs";
import { readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
const now = () => performance.timeOrigin + performance.now(); // epoch ms, as the bench's time.time()

const state = new Map(); // user id -> what happened to its socket
let duplicates = 0;

function open({ id, token }, index) {
  return new Promise((resolve, reject) => {
    const socket = io(plan.url, {
      auth: { token },
      transports: ["websocket"],
      extraHeaders: { cookie: plan.cookie },
      localAddress: plan.localAddresses[index % plan.localAddresses.length],
    });
    const mine = { socket, connects: 0, drops: 0, attempts: 0, failures: 0, reconnectedAt: null, recovered: null,
      received: {} };
    state.set(id, mine);
    socket.on("connect", () => {
      mine.connects += 1;
      if (mine.connects === 1) resolve(socket);
      else if (mine.reconnectedAt === null) {
        mine.reconnectedAt = now();
        mine.recovered = socket.recovered;
      }
    });
    socket.on("disconnect", () => { mine.drops += 1; });
    socket.on("connect_error", (error) => { if (mine.connects === 0) reject(error); else mine.failures += 1; });
    socket.io.on("reconnect_attempt", () => { mine.attempts += 1; });
    socket.on("receiveMessage", (message) => {
      if (message.text in mine.received) duplicates += 1;
      else mine.received[message.text] = now();
    });
  });
}

await Promise.all(plan.users.map(open));
let line = await reached("ready");
const expected = JSON.parse(readFileSync(line.split(" ")[1], "utf8"));
const deadline = performance.now() + 30000;
const missing = () => plan.users.some(({ id }) => (expected[id] || []).some((text) => !(text in state.get(id).received)));
while (missing() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
line = await reached("done");
writeFileSync(option("out"), JSON.stringify({
  duplicates,
  users: Object.fromEntries([...state].map(([id, mine]) => [id, {
    connects: mine.connects, drops: mine.drops, attempts: mine.attempts, failures: mine.failures, reconnectedAt: mine.reconnectedAt, recovered: mine.recovered,
    received: mine.received,
  }])),
}));
for (const { socket } of state.values()) socket.close();
process.exit(0);
