// The conformance fixtures of docs/cell-spec.md (tests/conformance) on onnxruntime-node: byte for byte, every
// case on every cell that has an expected text for it (the schema-3 cells in float32, float16 and int8, and the
// schema-2 cell for the cases with one set of options), mixed per-sample options included.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import {
  ArrayNoise, VrnnCell, VrnnError, callSteps, chooseFiltered, chooseUnfiltered, readMetadata, parseCellMetadata,
} from "../vrnn.mjs";

const fixtures = new URL("../../../tests/conformance/", import.meta.url);
const document = JSON.parse(readFileSync(fileURLToPath(new URL("cases.json", fixtures)), "utf-8"));
const cellFile = (key) => readFileSync(fileURLToPath(new URL(document.cells[key], fixtures)));
const cellBytes = cellFile("float32");
const bundled = readFileSync(fileURLToPath(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url)));
const caseNamed = (name) => document.cases.find((x) => x.name === name);
const VOCAB_SIZE = JSON.parse(readMetadata(cellBytes).get("vrnn.config")).vocab_size; // every fixture cell's

/** One options object of a case (snake_case, as make_fixtures.py writes it) in this module's words. */
function sampleOptions(o) {
  return {
    temperature: o.temperature ?? 1,
    topK: o.top_k ?? null,
    topP: o.top_p ?? null,
    greedy: o.greedy ?? false,
    latentTemperature: o.latent_temperature ?? 1,
  };
}

/** A case's options for generate(): one set for every sample, or a list, one per sample (perSample). */
const optionsOf = (c) => (Array.isArray(c.options) ? { perSample: c.options.map((o) => sampleOptions(o)) } : sampleOptions(c.options));
const run = (cell, c, extra = {}) => cell.generate({
  ...optionsOf(c), length: c.length, prime: c.prime, batch: c.batch, noise: new ArrayNoise(c.eps, c.uniform), ...extra,
});

/** Count a cell's session runs from now on, with each call's steps (eps dims[0]) and feeds. */
function countRuns(cell) {
  const calls = [];
  const runSession = cell.session.run.bind(cell.session);
  cell.session = { ...cell.session, run: (feeds) => {
    calls.push({ steps: feeds.eps.dims[0], feeds });
    return runSession(feeds);
  } };
  return calls;
}

const cell = await VrnnCell.load(ort, cellBytes);
const cells = {};
for (const key of Object.keys(document.cells)) cells[key] = await VrnnCell.load(ort, cellFile(key));

test("the fixtures name the cells this runtime must run: three of schema 3, one of schema 2", () => {
  assert.deepEqual(Object.keys(document.cells).sort(), ["float16", "float32", "int8", "schema2"]);
  for (const [key, variant] of Object.entries(cells)) {
    assert.equal(variant.version, key === "schema2" ? 2 : 3, key);
    assert.equal(variant.choosesPerRow, key !== "schema2", key);
    assert.equal(variant.weights, key === "schema2" ? "float32" : key, key);
    assert.equal(variant.vocab.length, VOCAB_SIZE, key);
  }
  const mixed = document.cases.filter((c) => Array.isArray(c.options));
  assert.ok(mixed.length >= 1, "no case of mixed per-sample options");
  for (const c of document.cases) {
    assert.deepEqual(Object.keys(c.expected).sort(),
                     (Array.isArray(c.options) ? ["float16", "float32", "int8"] : Object.keys(document.cells)).sort(),
                     c.name);
  }
});

for (const [key, variant] of Object.entries(cells)) {
  for (const c of document.cases) {
    if (!(key in c.expected)) continue; // a schema-2 cell takes one set of options for the whole batch
    test(`conformance (${key}): ${c.name}`, async () => {
      assert.deepEqual(await run(variant, c), c.expected[key]);
    });
  }
}

test("a schema-2 cell refuses a batch of mixed options in one line, before running", async () => {
  const v2 = cells.schema2;
  for (const c of document.cases.filter((x) => Array.isArray(x.options))) {
    const calls = countRuns(v2);
    await assert.rejects(run(v2, c), (error) => error instanceof VrnnError && !error.message.includes("\n") &&
                         /^this cell is of schema 2: it takes one set of options for the whole batch/.test(error.message),
                         c.name);
    assert.equal(calls.length, 0, c.name);
  }
  // A latent temperature is an option too: samples that differ only in it are mixed.
  await assert.rejects(v2.generate({ length: 5, batch: 2, seed: 1, perSample: [{}, { latentTemperature: 0.5 }] }),
                       /one set of options/);
  // The same options for every sample, given per sample, are one set: the text of the top-level options.
  const c = caseNamed("batch-2-prime-top-k");
  const same = await run(v2, c, { topK: null, perSample: [{ topK: 3 }, { topK: 3 }] });
  assert.deepEqual(same, c.expected.schema2);
});

test("a mixed batch's samples are each what that sample writes alone with its noise and options", async () => {
  const c = caseNamed("mixed-6");
  const Z = cell.config.latent_size;
  const steps = c.prime.length + c.length;
  for (let b = 0; b < c.batch; b++) {
    const eps = [];
    for (let t = 0; t < steps; t++) eps.push(...c.eps.slice((t * c.batch + b) * Z, (t * c.batch + b + 1) * Z));
    const uniform = c.uniform.filter((_, i) => i % c.batch === b);
    const [alone] = await cell.generate({ ...sampleOptions(c.options[b]), length: c.length, prime: c.prime,
                                          noise: new ArrayNoise(eps, uniform) });
    assert.equal(alone, c.expected.float32[b], `sample ${b}`);
  }
});

test("a schema-3 cell runs top-k, top-p, greedy and mixed options many steps per call", async () => {
  const expectedCalls = (c) => Math.ceil(c.length / callSteps(c.batch)) + c.prime.length;
  for (const name of ["top-k", "top-p", "top-k-top-p-temperature", "greedy", "prime-top-p", "mixed-6", "mixed-prime",
                      "mixed-long"]) {
    const c = caseNamed(name);
    const calls = countRuns(cell);
    assert.deepEqual(await run(cell, c), c.expected.float32, name);
    assert.equal(calls.length, expectedCalls(c), name);
    const sampling = calls.slice(c.prime.length);
    assert.ok(sampling.every((call) => call.steps > 1), name);
    assert.equal(sampling.reduce((sum, call) => sum + call.steps, 0), c.length, name);
  }
  // A schema-2 cell, by contrast, runs those one step per call (and its unfiltered sampling in chunks).
  for (const [name, perCall] of [["top-k", 1], ["greedy", 1], ["top-p", 1], ["unfiltered", 256]]) {
    const c = caseNamed(name);
    const calls = countRuns(cells.schema2);
    assert.deepEqual(await run(cells.schema2, c), c.expected.schema2, name);
    assert.equal(calls.length, Math.ceil(c.length / perCall), name);
  }
});

test("a schema-3 cell is fed each sample's temperature, top_k and top_p; forced steps the neutral ones", async () => {
  const calls = countRuns(cell);
  await cell.generate({
    length: 3, prime: "O", batch: 5, seed: 2, temperature: 0.5,
    perSample: [{}, { topK: 4 }, { topP: 0.75, temperature: 2 }, { greedy: true, temperature: 1 }, { topP: 1 }],
  });
  assert.equal(calls.length, 2);
  const [forced, sampling] = calls.map((call) => call.feeds);
  const values = (tensor) => [...tensor.data];
  assert.deepEqual(forced.temperature.dims, [5]);
  assert.deepEqual(values(forced.temperature), [1, 1, 1, 1, 1]);
  assert.deepEqual(values(forced.top_k), [0n, 0n, 0n, 0n, 0n]);
  assert.deepEqual(values(forced.top_p), [1, 1, 1, 1, 1]);
  assert.deepEqual(values(forced.uniform), [0.5, 0.5, 0.5, 0.5, 0.5]);
  assert.equal(forced.top_k.type, "int64");
  assert.equal(sampling.top_p.type, "float64");
  assert.deepEqual(sampling.eps.dims, [3, 5, cell.config.latent_size]);
  assert.deepEqual(values(sampling.temperature), [0.5, 0.5, 2, 1, 0.5]);
  assert.deepEqual(values(sampling.top_k), [0n, 4n, 0n, 1n, 0n]); // greedy: top_k 1 at temperature 1, top_p 1
  assert.deepEqual(values(sampling.top_p), [1, 1, 0.75, 1, 1]); // a top-p of 1 is none
});

test("a schema-2 cell is fed one temperature of rank 0 and no top_k or top_p", async () => {
  const calls = countRuns(cells.schema2);
  await cells.schema2.generate({ length: 2, batch: 2, seed: 1, temperature: 0.7, topK: 3 });
  assert.equal(calls.length, 2);
  for (const { feeds } of calls) {
    assert.deepEqual(feeds.temperature.dims, []);
    assert.deepEqual([...feeds.temperature.data], [0.7]);
    assert.ok(!("top_k" in feeds) && !("top_p" in feeds));
  }
});

test("a top-p of 1 is no top-p: the unfiltered text and pick, also on a schema-2 cell", async () => {
  for (const key of ["float32", "schema2"]) {
    const c = caseNamed("temperature");
    const calls = countRuns(cells[key]);
    assert.deepEqual(await run(cells[key], c, { topP: 1 }), c.expected[key], key);
    assert.equal(calls.length, 1, key); // not one step per call on the schema-2 cell either
  }
  const logits = Float32Array.from({ length: 40 }, (_, i) => Math.sin(i * 1.7) * 3);
  for (const u of [0, 0.1, 0.37, 0.5, 0.83, 0.999999]) {
    for (const temperature of [1, 0.6, 1.9]) {
      const unfiltered = chooseUnfiltered(logits, 0, 40, u, temperature);
      assert.equal(chooseFiltered(logits, 0, 40, u, { temperature, topP: 1 }), unfiltered);
      assert.equal(chooseFiltered(logits, 0, 40, u, { temperature }), unfiltered);
    }
  }
});

test("streaming sees every character once, in order", async () => {
  const c = caseNamed("long-chunks");
  const streamed = [];
  const texts = await cell.generate({
    ...optionsOf(c), length: c.length, noise: new ArrayNoise(c.eps, c.uniform),
    onChars: (rows) => rows.forEach((row) => streamed.push(row[0])),
  });
  assert.equal(streamed.join(""), texts[0]);
});

test("its own seeded noise: the same seed gives the same text, another seed another", async () => {
  const a = await cell.generate({ length: 80, seed: 5 });
  assert.deepEqual(await cell.generate({ length: 80, seed: 5 }), a);
  assert.notDeepEqual(await cell.generate({ length: 80, seed: 6 }), a);
  const fixed = await cell.generate({ length: 40, greedy: true, latentTemperature: 0, seed: 1 });
  assert.deepEqual(await cell.generate({ length: 40, greedy: true, latentTemperature: 0, seed: 2 }), fixed);
});

test("the bundled Shakespeare cell is of schema 3, loads and writes text with any options", async () => {
  const shakespeare = await VrnnCell.load(ort, bundled);
  assert.equal(shakespeare.config.hidden_size, 512);
  assert.equal(shakespeare.version, 3);
  const [text] = await shakespeare.generate({ length: 200, prime: "ROMEO:", seed: 3 });
  assert.ok(text.startsWith("ROMEO:") && [...text].length === 206);
  const calls = countRuns(shakespeare);
  const texts = await shakespeare.generate({ length: 100, batch: 2, seed: 3, perSample: [{ topP: 0.9 }, { greedy: true }] });
  assert.equal(calls.length, 1);
  assert.ok(texts.every((t) => [...t].length === 100));
});

test("metadata and options are checked, with errors that say what is wrong", async () => {
  assert.throws(() => readMetadata(new Uint8Array([1, 2, 3])), VrnnError);
  const meta = readMetadata(cellBytes);
  const tweak = (key, value) => parseCellMetadata(new Map([...meta, [key, value]]));
  assert.throws(() => tweak("vrnn.format", "other"), /not a vrnn cell/);
  assert.throws(() => tweak("vrnn.schema_version", "4"), /upgrade/);
  assert.throws(() => tweak("vrnn.schema_version", "1"), /re-export/);
  assert.equal(tweak("vrnn.schema_version", "2").version, 2);
  assert.equal(tweak("vrnn.schema_version", "3").version, 3);
  assert.throws(() => tweak("vrnn.vocab", JSON.stringify(["a", "\ud800"])), /single characters/);
  assert.throws(() => tweak("vrnn.start_char", "\u4e00"), /start character/);
  await assert.rejects(cell.generate({ length: 5, temperature: 0 }), /temperature/);
  await assert.rejects(cell.generate({ length: 5, topK: 0 }), /topK/);
  await assert.rejects(cell.generate({ length: 5, topK: VOCAB_SIZE + 1 }), /topK must be an integer from 1 to 36/);
  await assert.rejects(cell.generate({ length: 5, greedy: true, topP: 0.5 }), /greedy/);
  await assert.rejects(cell.generate({ length: 5, prime: "\u4e00" }), /outside the vocabulary/);
});
