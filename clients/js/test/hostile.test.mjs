// Hostile input to the JavaScript runtime and the demo's server: each refused in one line, none fatal.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import {
  MAX_HELD_CHARS, MAX_LENGTH, MAX_SAMPLES, VrnnCell, VrnnError, parseCellMetadata, readMetadata,
} from "../vrnn.mjs";
import { serve } from "../../web/serve.mjs";

const fixtures = new URL("../../../tests/conformance/", import.meta.url);
const cellBytes = readFileSync(fileURLToPath(new URL("cell.onnx", fixtures)));
const versions = JSON.parse(readFileSync(fileURLToPath(new URL("schema-versions.json", fixtures)), "utf-8"));
const SERVE = fileURLToPath(new URL("../../web/serve.mjs", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "vrnn-hostile-"));
const children = [];
after(() => {
  for (const child of children) child.kill();
  rmSync(scratch, { recursive: true, force: true });
});

// --- the runtime -------------------------------------------------------------------------------------------

/** For assert.throws and .rejects: a one-line VrnnError whose message matches `pattern`. */
const refusal = (pattern) => (error) =>
  error instanceof VrnnError && pattern.test(error.message) && !error.message.includes("\n");

/** The conformance cell's metadata with a session that must never run: a refusal has to come first. */
function unrunnableCell() {
  const session = { run: async () => assert.fail("the cell ran") };
  return new VrnnCell(ort, session, parseCellMetadata(readMetadata(cellBytes)));
}

test("schema versions: the JavaScript runtime accepts exactly the list's (as the Python runtime does)", () => {
  const meta = readMetadata(cellBytes);
  const parse = (version) => parseCellMetadata(new Map([...meta, ["vrnn.schema_version", version]]));
  for (const version of versions.accepted) assert.doesNotThrow(() => parse(version), JSON.stringify(version));
  for (const version of versions.refused) {
    assert.throws(() => parse(version), refusal(/schema version/), JSON.stringify(version));
  }
});

test("length and batch have the Python runtime's bounds, checked before any work", async () => {
  const cell = unrunnableCell();
  for (const length of [0, 1.5, MAX_LENGTH + 1, 1e9, Infinity]) {
    await assert.rejects(cell.generate({ length }), refusal(/^length must be an integer from 1 to 10000000$/));
  }
  await assert.rejects(cell.generate({ length: 5, batch: MAX_SAMPLES + 1 }),
                       refusal(/^batch must be an integer from 1 to 4096$/));
  await assert.rejects(cell.generate({ length: 100000, batch: 4096 }),
                       refusal(/^batch 4096 x length 100000 is more than/));
  const edge = { length: MAX_HELD_CHARS / MAX_SAMPLES, batch: MAX_SAMPLES }; // allowed: it reaches the cell
  await assert.rejects(unrunnableCell().generate(edge), /the cell ran/);
});

test("latentTemperature must be in [0, 100]", async () => {
  const cell = unrunnableCell();
  for (const latentTemperature of [1e300, 1e38, 100.5, -1, NaN, "1"]) {
    await assert.rejects(cell.generate({ length: 5, latentTemperature }),
                         refusal(/^latentTemperature must be a finite number in \[0, 100\]$/));
  }
  await assert.rejects(cell.generate({ length: 5, latentTemperature: 100 }), /the cell ran/);
});

test("seed and stepsPerCall have the Python runtime's bounds, checked before any work", async () => {
  const cell = unrunnableCell();
  for (const seed of [-1, 2 ** 64, 2 ** 63, -1n, 2n ** 63n, 1.5, NaN, Infinity, "1"]) {
    await assert.rejects(cell.generate({ length: 5, seed }),
                         refusal(/^seed must be null or an integer from 0 to 2\*\*63-1$/), String(seed));
  }
  for (const seed of [0, 2 ** 53, 2n ** 63n - 1n]) { // allowed: they reach the cell
    await assert.rejects(unrunnableCell().generate({ length: 5, seed }), /the cell ran/, String(seed));
  }
  for (const stepsPerCall of [0, -1, 1.5, 257, 1e9, NaN, "8"]) {
    await assert.rejects(cell.generate({ length: 5, stepsPerCall }),
                         refusal(/^stepsPerCall must be null or an integer from 1 to 256$/), String(stepsPerCall));
  }
  for (const stepsPerCall of [1, 256]) {
    await assert.rejects(unrunnableCell().generate({ length: 5, stepsPerCall }), /the cell ran/);
  }
});

// --- cells whose metadata lies about their graph ----------------------------------------------------------

function varintAt(bytes, pos) {
  let value = 0;
  for (let shift = 0; ; shift += 7) {
    const byte = bytes[pos++];
    value += (byte & 0x7f) * 2 ** shift;
    if (!(byte & 0x80)) return [value, pos];
  }
}

function varintBytes(value) {
  const out = [];
  for (; value >= 0x80; value = Math.floor(value / 128)) out.push((value % 128) | 0x80);
  out.push(value);
  return Buffer.from(out);
}

const delimited = (field, bytes) => Buffer.concat([varintBytes(field * 8 + 2), varintBytes(bytes.length), bytes]);

/** The conformance cell with the metadata entries in `changes` replaced (ModelProto field 14), its graph
 * untouched: a cell whose metadata describes another graph. */
function withMetadata(changes) {
  const parts = [];
  for (let pos = 0; pos < cellBytes.length; ) {
    const start = pos;
    let key, size;
    [key, pos] = varintAt(cellBytes, pos);
    const wire = key % 8;
    if (wire === 0) {
      [, pos] = varintAt(cellBytes, pos);
    } else if (wire === 2) {
      [size, pos] = varintAt(cellBytes, pos);
      pos += size;
    } else {
      pos += wire === 1 ? 8 : 4;
    }
    const entry = cellBytes.subarray(start, pos);
    // An entry's key, read by the module's own reader from a model of that entry and an empty graph.
    const entryKey = () => [...readMetadata(Buffer.concat([entry, delimited(7, Buffer.alloc(0))])).keys()][0];
    if (Math.floor(key / 8) !== 14 || !(entryKey() in changes)) parts.push(entry);
  }
  for (const [name, value] of Object.entries(changes)) {
    parts.push(delimited(14, Buffer.concat([delimited(1, Buffer.from(name)), delimited(2, Buffer.from(value))])));
  }
  return new Uint8Array(Buffer.concat(parts));
}

test("a cell whose metadata disagrees with its graph's sizes is refused in one line, as in Python", async () => {
  const config = JSON.parse(readMetadata(cellBytes).get("vrnn.config"));
  const lies = {
    hidden_size: config.hidden_size + 1, embed_size: config.embed_size * 2,
    latent_size: config.latent_size + 3, layers: config.layers + 1,
  };
  for (const [name, value] of Object.entries(lies)) {
    const bytes = withMetadata({ "vrnn.config": JSON.stringify({ ...config, [name]: value }) });
    assert.equal(JSON.parse(readMetadata(bytes).get("vrnn.config"))[name], value); // the edit took
    const words = /^the cell's metadata does not describe its graph: \w+ has shape \[.*\] but the metadata implies /;
    await assert.rejects(VrnnCell.load(ort, bytes), refusal(words), name);
  }
  const same = withMetadata({ "vrnn.config": JSON.stringify(config) }); // re-encoded, unchanged: still loads
  assert.deepEqual(await (await VrnnCell.load(ort, same)).generate({ length: 20, seed: 3 }),
                   await (await VrnnCell.load(ort, cellBytes)).generate({ length: 20, seed: 3 }));
});

test("a character id outside the vocabulary is refused, not printed", async () => {
  const cell = await VrnnCell.load(ort, cellBytes); // a sound cell passes the probe; then it goes wrong
  const run = cell.session.run.bind(cell.session);
  for (const bad of [97n, 36n, -1n]) {
    cell.session = { run: async (feeds) => {
      const out = await run(feeds);
      return { ...out, chars: { data: out.chars.data.map(() => bad) } };
    } };
    await assert.rejects(cell.generate({ length: 10, seed: 1 }),
                         refusal(new RegExp(`^the cell picked character id ${bad}, outside its vocabulary of 36 `)));
  }
});

// --- the demo's server ------------------------------------------------------------------------------------

/** The status of one raw request: no client library tidies the target first. */
function status(port, target, method = "HEAD") {
  return new Promise((done, fail) => {
    const socket = connect(port, "127.0.0.1");
    let reply = "";
    socket.on("data", (chunk) => { reply += chunk.toString("latin1"); });
    socket.on("end", () => done(Number(reply.split(" ")[1])));
    socket.on("error", fail);
    socket.write(`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
  });
}

/** Run serve.mjs as `make web` does, on a free port; resolves to its port. */
async function startServer() {
  const child = spawn(process.execPath, [SERVE, "0"], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  let out = "";
  for await (const chunk of child.stdout) {
    out += chunk;
    const port = /127\.0\.0\.1:(\d+)\//.exec(out)?.[1];
    if (port) return Number(port);
  }
  assert.fail(`serve.mjs exited without serving: ${out}`);
}

test("the server serves what the page fetches, and nothing else of the repository", async () => {
  const server = await serve(0);
  const { port } = server.address();
  try {
    for (const path of ["/clients/web/", "/clients/web/worker.mjs", "/clients/js/vrnn.mjs",
                        "/clients/js/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",
                        "/clients/js/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
                        "/runtime/bundled-cell/shakespeare.onnx", "/tests/conformance/cases.json",
                        "/tests/conformance/cell-int8.onnx", "/clients/web/index.html?conformance=1"]) {
      assert.equal(await status(port, path), 200, path);
    }
    for (const path of ["/", "/.git/HEAD", "/.git/config", "/README.md", "/Makefile", "/clients/js/package.json",
                        "/runtime/cell.py", "/clients/web/../../.git/HEAD", "/clients/web/%2e%2e/%2e%2e/.git/HEAD",
                        "/clients/web/..%2f..%2f.git/HEAD", "/clients/web",
                        "/clients/js/node_modules/onnxruntime-web/package.json"]) {
      assert.equal(await status(port, path), 404, path);
    }
    assert.equal(await status(port, "/clients/web/", "POST"), 405);
  } finally {
    server.close();
  }
});

test("the server never follows a symlink out of the served folders", async () => {
  const root = join(scratch, "root");
  mkdirSync(join(root, "clients/web"), { recursive: true });
  mkdirSync(join(root, "secret"));
  writeFileSync(join(root, "clients/web/index.html"), "page");
  writeFileSync(join(root, "secret/key"), "secret");
  symlinkSync(join(root, "secret/key"), join(root, "clients/web/key"));
  symlinkSync(join(root, "secret"), join(root, "clients/web/folder"));
  symlinkSync("/etc/passwd", join(root, "clients/web/passwd"));
  symlinkSync(join(root, "clients/web/index.html"), join(root, "clients/web/alias.html")); // inside: served
  const server = await serve(0, { root });
  const { port } = server.address();
  try {
    assert.equal(await status(port, "/clients/web/alias.html"), 200);
    for (const path of ["/clients/web/key", "/clients/web/folder/key", "/clients/web/passwd", "/secret/key"]) {
      assert.equal(await status(port, path), 404, path);
    }
  } finally {
    server.close();
  }
});

test("a malformed request gets 400 and the server keeps serving", async () => {
  const port = await startServer();
  for (const target of ["/%", "/clients/web/%E0%A4%A", "http://[", "*", "/clients/web/%00"]) {
    assert.equal(await status(port, target, "GET"), 400, target);
  }
  assert.equal(await status(port, "/clients/web/", "GET"), 200);
});

test("serve.mjs refuses a bad port, or one in use, in one line", async () => {
  const oneLine = (result, pattern) => {
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, pattern);
    assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  };
  for (const port of ["abc", "-1", "65536", "80.5", ""]) {
    oneLine(spawnSync(process.execPath, [SERVE, port], { encoding: "utf-8", timeout: 10000 }),
            /^serve\.mjs: port must be an integer from 0 to 65535/);
  }
  const taken = createServer();
  await new Promise((done) => taken.listen(0, "127.0.0.1", done));
  try {
    const result = await new Promise((done) => {
      const child = spawn(process.execPath, [SERVE, String(taken.address().port)],
                          { stdio: ["ignore", "ignore", "pipe"] });
      children.push(child);
      let stderr = "";
      child.stderr.on("data", (chunk) => { stderr += chunk; });
      child.on("close", (code) => done({ status: code, stderr }));
    });
    oneLine(result, /^serve\.mjs: cannot listen on 127\.0\.0\.1:\d+: the port is in use$/m);
  } finally {
    taken.close();
  }
});
