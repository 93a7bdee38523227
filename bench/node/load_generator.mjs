// A load generator built on the real socket.io-client from npm (the web client's copy), with
// its default options (polling first, then the upgrade; reconnection on): every figure as a
// real client sees it. The Python generator (bench/load_generator.py) is the lean one.
//
// Usage: node bench/node/load_generator.mjs --plan PLAN.json --out OUT.json
// PLAN: {rate, seconds, tag, pairs: [{sender: {url, token}, receiver: {url, token, id}}]}
// The exchange with the bench (bench/measure.py, Generators), a word a line: it says "ready"
// once every socket is connected and waits for "go"; sends at the rate; says "done" once every
// message is delivered and acknowledged (or 5 s after the last send) and waits for "exit".
import { io, option, plan, reached } from "./generator_steps.mjs";
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

const sentAt = new Map(), delivered = new Map(), acked = new Map();
let duplicates = 0, errors = 0;
const connectStarted = performance.now();
const connectMs = [];

function open(url, token) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { auth: { token } });
    const started = performance.now();
    socket.once("connect", () => { connectMs.push(performance.now() - started); resolve(socket); });
    socket.once("connect_error", reject);
  });
}

const senders = [], sockets = [];
await Promise.all(plan.pairs.map(async ({ sender, receiver }) => {
  const [from, to] = await Promise.all([open(sender.url, sender.token), open(receiver.url, receiver.token)]);
  to.on("receiveMessage", (message) => {
    if (delivered.has(message.text)) duplicates += 1;
    else delivered.set(message.text, performance.now());
  });
  senders.push([from, receiver.id]);
  sockets.push(from, to);
}));
// The upgrade to websocket follows the connect: wait for every socket to finish it.
await Promise.all(sockets.map((socket) => socket.io.engine.transport.name === "websocket" ? null
  : new Promise((resolve) => socket.io.engine.once("upgrade", resolve))));
const allConnectedMs = performance.now() - connectStarted;

await reached("ready");
const cpuBefore = process.cpuUsage();
const total = Math.floor(plan.rate * plan.seconds);
const started = performance.now();
for (let number = 0; number < total; number += 1) {
  const delay = started + (number * 1000) / plan.rate - performance.now();
  if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
  const [socket, receiverId] = senders[number % senders.length];
  const text = `${plan.tag}:${number}`;
  sentAt.set(text, performance.now());
  socket.emit("sendMessage", { receiverId, text, clientId: text }, (ack) => {
    if (ack && ack.ok) acked.set(text, performance.now());
    else errors += 1;
  });
}
const sendSeconds = (performance.now() - started) / 1000;
const deadline = performance.now() + 5000;
while ((delivered.size < total || acked.size + errors < total) && performance.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const cpu = process.cpuUsage(cpuBefore);
await reached("done");
const since = (times) => [...times].map(([text, at]) => at - sentAt.get(text)).sort((a, b) => a - b);
writeFileSync(option("out"), JSON.stringify({
  sent: total, send_seconds: sendSeconds, delivered: delivered.size, acked: acked.size, errors, duplicates,
  delivery_ms: since(delivered), ack_ms: since(acked), cpu_seconds: (cpu.user + cpu.system) / 1e6,
  connect_ms: connectMs.sort((a, b) => a - b), all_connected_ms: allConnectedMs,
}));
for (const socket of sockets) socket.close();
process.exit(0);
