// What the Node generators share (bench/node/*_generator.mjs): socket.io-client from the web
// client's npm install, their command-line plan, and their line-by-line exchange with the bench
// (bench/measure.py, Generators; the Python side is bench/generator_steps.py).
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.resolve(here, "../../services/gateway/webclient/node_modules");
export const { io } = createRequire(path.join(modules, "noop.js"))("socket.io-client");

export const option = (name) => process.argv[process.argv.indexOf(`--${name}`) + 1];
export const plan = JSON.parse(readFileSync(option("plan"), "utf8"));

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
// Says `word` to the bench and waits for its answer (the line that lets this generator on).
export async function reached(word) {
  process.stdout.write(word + "\n");
  return (await lines.next()).value;
}
