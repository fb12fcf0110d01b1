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
  MAX_HELD_CHARS, MAX_LENGTH, MAX_SAMPLES, VrnnCell, VrnnError, checkSignature, parseCellMetadata, readMetadata,
  readSignature,
} from "../vrnn.mjs";
import { serve } from "../../web/serve.mjs";

const fixtures = new URL("../../../tests/conformance/", import.meta.url);
const cellBytes = readFileSync(fileURLToPath(new URL("cell.onnx", fixtures))); // schema 3
const v2Bytes = readFileSync(fileURLToPath(new URL("cell-v2.onnx", fixtures))); // schema 2 (vrnn 0.2)
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

/** A conformance cell's metadata with a session that must never run: a refusal has to come first. */
function unrunnableCell(bytes = cellBytes) {
  const session = { run: async () => assert.fail("the cell ran") };
  return new VrnnCell(ort, session, parseCellMetadata(readMetadata(bytes)));
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

test("perSample options are checked as the top-level ones, each named by its index, before any work", async () => {
  const cell = unrunnableCell();
  const refused = async (options, pattern) => {
    await assert.rejects(cell.generate({ length: 5, batch: 2, ...options }), refusal(pattern), JSON.stringify(options));
  };
  for (const perSample of [{}, "a", 3, new Map()]) {
    await refused({ perSample }, /^perSample must be null or an array of one options object per sample$/);
  }
  await refused({ perSample: [{}] }, /^perSample has 1 entries for a batch of 2: give one per sample$/);
  await refused({ perSample: [{}, {}, {}] }, /^perSample has 3 entries for a batch of 2: give one per sample$/);
  await assert.rejects(cell.generate({ length: 5, perSample: [{}, {}] }), refusal(/^perSample has 2 entries for a batch of 1/));
  for (const entry of [null, 1, "x", [], true]) {
    await refused({ perSample: [{}, entry] }, /^perSample\[1\] must be an object of options$/);
  }
  await refused({ perSample: [{ top_k: 3 }, {}] },
                /^perSample\[0\] has an unknown option "top_k" \(it takes temperature, topK, topP, greedy, latentTemperature\)$/);
  await refused({ perSample: [{}, { seed: 3 }] }, /^perSample\[1\] has an unknown option "seed"/);
  const bad = [
    [{ temperature: 0 }, /^perSample\[1\]: temperature must be a finite number > 0$/],
    [{ temperature: NaN }, /^perSample\[1\]: temperature must be a finite number > 0$/],
    [{ temperature: "1" }, /^perSample\[1\]: temperature must be a finite number > 0$/],
    [{ topK: 0 }, /^perSample\[1\]: topK must be an integer from 1 to 36$/],
    [{ topK: 37 }, /^perSample\[1\]: topK must be an integer from 1 to 36$/],
    [{ topK: 2.5 }, /^perSample\[1\]: topK must be an integer from 1 to 36$/],
    [{ topP: 0 }, /^perSample\[1\]: topP must be in \(0, 1\]$/],
    [{ topP: 1.01 }, /^perSample\[1\]: topP must be in \(0, 1\]$/],
    [{ greedy: 1 }, /^perSample\[1\]: greedy must be true or false$/],
    [{ greedy: true, topK: 3 }, /^perSample\[1\]: greedy cannot be combined with temperature, topK or topP$/],
    [{ greedy: true, temperature: 0.5 }, /^perSample\[1\]: greedy cannot be combined/],
    [{ latentTemperature: -1 }, /^perSample\[1\]: latentTemperature must be a finite number in \[0, 100\]$/],
    [{ latentTemperature: 101 }, /^perSample\[1\]: latentTemperature must be a finite number in \[0, 100\]$/],
  ];
  for (const [entry, pattern] of bad) await refused({ perSample: [{}, entry] }, pattern);
  // Missing fields come from the top-level options, and are checked with the entry: a top-level greedy
  // and an entry's temperature do not combine; an entry's greedy: false overrides it.
  await refused({ greedy: true, perSample: [{}, { temperature: 0.5 }] }, /^perSample\[1\]: greedy cannot be combined/);
  await refused({ temperature: 0.5, perSample: [{}, { greedy: true }] }, /^perSample\[1\]: greedy cannot be combined/);
  // The top-level options are checked too, even when every sample overrides them.
  await refused({ topK: 99, perSample: [{ topK: 2 }, { topK: 3 }] }, /^topK must be an integer from 1 to 36$/);
  await assert.rejects(cell.generate({ length: 5, greedy: "yes" }), refusal(/^greedy must be true or false$/));
  // Allowed: they reach the cell.
  for (const perSample of [
    [{}, {}], [{ greedy: true }, { topP: 1, latentTemperature: 0 }], [{ topK: 36, topP: 0.5, temperature: 3 }, { topK: 1 }],
    [{ temperature: undefined }, { topK: null }],
  ]) {
    await assert.rejects(unrunnableCell().generate({ length: 5, batch: 2, perSample }), /the cell ran/);
  }
  await assert.rejects(unrunnableCell().generate({ length: 5, batch: 2, greedy: true,
                                                   perSample: [{ greedy: false, topP: 0.5 }, {}] }), /the cell ran/);
});

test("a schema-2 cell refuses mixed perSample options in one line before running; one set it runs", async () => {
  const v2 = unrunnableCell(v2Bytes);
  assert.equal(v2.version, 2);
  for (const perSample of [[{}, { temperature: 0.5 }], [{ topK: 3 }, { topK: 4 }], [{ greedy: true }, {}],
                           [{}, { latentTemperature: 0.5 }], [{ topP: 0.9 }, { topP: 1 }]]) {
    await assert.rejects(v2.generate({ length: 5, batch: 2, perSample }),
                         refusal(/^this cell is of schema 2: it takes one set of options for the whole batch, and perSample gives different ones; re-export it with vrnn-export to mix them$/),
                         JSON.stringify(perSample));
  }
  await assert.rejects(unrunnableCell(v2Bytes).generate({ length: 5, batch: 2, temperature: 0.5,
                                                          perSample: [{}, { temperature: 0.5 }] }), /the cell ran/);
  await assert.rejects(unrunnableCell().generate({ length: 5, batch: 2, perSample: [{}, { temperature: 0.5 }] }),
                       /the cell ran/); // schema 3 takes them
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

/** A conformance cell with the metadata entries in `changes` replaced (ModelProto field 14), its graph
 * untouched: a cell whose metadata describes another graph. */
function withMetadata(changes, bytes = cellBytes) {
  const parts = [];
  for (let pos = 0; pos < bytes.length; ) {
    const start = pos;
    let key, size;
    [key, pos] = varintAt(bytes, pos);
    const wire = key % 8;
    if (wire === 0) {
      [, pos] = varintAt(bytes, pos);
    } else if (wire === 2) {
      [size, pos] = varintAt(bytes, pos);
      pos += size;
    } else {
      pos += wire === 1 ? 8 : 4;
    }
    const entry = bytes.subarray(start, pos);
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

test("a cell whose metadata names the other schema than its graph's inputs is refused in one line", async () => {
  const v3as2 = withMetadata({ "vrnn.schema_version": "2" });
  await assert.rejects(VrnnCell.load(ort, v3as2), refusal(
    /^the cell's metadata says schema version 2 but its graph has the inputs top_k and top_p of schema 3: /));
  const v2as3 = withMetadata({ "vrnn.schema_version": "3" }, v2Bytes);
  await assert.rejects(VrnnCell.load(ort, v2as3), refusal(
    /^the cell's metadata says schema version 3 but its graph lacks the inputs top_k and top_p: /));
  // Each schema's shapes: schema 3 takes a temperature per sample, schema 2 one of rank 0.
  const config = JSON.parse(readMetadata(cellBytes).get("vrnn.config"));
  const v3 = readSignature(cellBytes);
  const v2 = readSignature(v2Bytes);
  assert.doesNotThrow(() => checkSignature(v3, config, 3));
  assert.doesNotThrow(() => checkSignature(v2, config, 2));
  assert.deepEqual(v3.get("temperature"), ["batch"]);
  assert.deepEqual(v2.get("temperature"), []);
  const without = (name) => new Map([...v3].filter(([key]) => key !== name));
  assert.throws(() => checkSignature(without("top_p"), config, 3),
                refusal(/^the cell's metadata says schema version 3 but its graph lacks the input top_p: /));
  assert.throws(() => checkSignature(new Map([...v2, ["top_k", ["batch"]]]), config, 2),
                refusal(/^the cell's metadata says schema version 2 but its graph has the input top_k of schema 3: /));
  const shapes = (changes, base = v3) => new Map([...base, ...Object.entries(changes)]);
  for (const [changes, version, words] of [
    [{ temperature: [] }, 3, "temperature has shape [] but the metadata implies [batch]"],
    [{ top_k: ["batch", 1] }, 3, "top_k has shape [batch, 1] but the metadata implies [batch]"],
    [{ top_p: [] }, 3, "top_p has shape [] but the metadata implies [batch]"],
    [{ temperature: ["batch"] }, 2, "temperature has shape [batch] but the metadata implies []"],
  ]) {
    const base = version === 3 ? v3 : v2;
    assert.throws(() => checkSignature(shapes(changes, base), config, version), (error) =>
      error instanceof VrnnError && error.message === `the cell's metadata does not describe its graph: ${words}`);
  }
  // Both schemas' cells load and write text.
  assert.equal((await VrnnCell.load(ort, v2Bytes)).version, 2);
  assert.equal((await VrnnCell.load(ort, cellBytes)).version, 3);
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
