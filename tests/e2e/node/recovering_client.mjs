// The guide's kind of client, as it is: socket.io-client from npm (the web client's copy), default
// options (reconnection on, connection-state recovery as the library speaks it), `auth: {token}`.
// Usage: node recovering_client.mjs <url> <token>
// Writes one JSON line to stdout per thing that happens:
//   {"type": "connect", "recovered": bool, "id": sid, "pid": pid}   (pid: the library's own field)
//   {"type": "event", "event": name, "args": [...]}
//   {"type": "disconnect", "reason": ...} / {"type": "connect_error", "message": ...}
// Reads commands, one a line, from stdin:
//   drop                 closes the transport (as a network drop: the library reconnects by itself)
//   claim <pid> <offset> makes the next reconnection present this pid and offset ("-": none), then
//                        drops: a hostile client's forged or stolen pid, through the real library
//   exit
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.resolve(here, "../../../services/gateway/webclient/node_modules");
const require = createRequire(path.join(modules, "noop.js"));
const { io } = require("socket.io-client");

const [url, token] = process.argv.slice(2);
const say = (record) => process.stdout.write(JSON.stringify(record) + "\n");

const socket = io(url, { auth: { token } });
socket.on("connect", () => say({ type: "connect", recovered: socket.recovered, id: socket.id, pid: socket._pid }));
socket.on("disconnect", (reason) => say({ type: "disconnect", reason }));
socket.on("connect_error", (error) => say({ type: "connect_error", message: error.message }));
socket.onAny((event, ...args) => say({ type: "event", event, args }));

createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, ...rest] = line.trim().split(/\s+/);
  if (command === "drop") {
    socket.io.engine.close();
  } else if (command === "claim") {
    const [pid, offset] = rest;
    socket._pid = pid;
    socket._lastOffset = offset === "-" ? undefined : offset;
    socket.io.engine.close();
  } else if (command === "exit") {
    socket.close();
    process.exit(0);
  }
});
