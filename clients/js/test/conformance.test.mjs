// The conformance fixtures of docs/cell-spec.md (tests/conformance) on onnxruntime-node: byte for byte.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { ArrayNoise, VrnnCell, VrnnError, readMetadata, parseCellMetadata } from "../vrnn.mjs";

const fixtures = new URL("../../../tests/conformance/", import.meta.url);
const document = JSON.parse(readFileSync(fileURLToPath(new URL("cases.json", fixtures)), "utf-8"));
const cellFile = (weights) => readFileSync(fileURLToPath(new URL(document.cells[weights], fixtures)));
const cellBytes = cellFile("float32");
const bundled = readFileSync(fileURLToPath(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url)));

function optionsOf(c) {
  const o = c.options;
  return {
    temperature: o.temperature ?? 1,
    topK: o.top_k ?? null,
    topP: o.top_p ?? null,
    greedy: o.greedy ?? false,
    latentTemperature: o.latent_temperature ?? 1,
  };
}

const cell = await VrnnCell.load(ort, cellBytes);

for (const weights of Object.keys(document.cells)) {
  const variant = await VrnnCell.load(ort, cellFile(weights));
  for (const c of document.cases) {
    test(`conformance (${weights}): ${c.name}`, async () => {
      assert.equal(variant.weights, weights);
      const texts = await variant.generate({
        ...optionsOf(c), length: c.length, prime: c.prime, batch: c.batch, noise: new ArrayNoise(c.eps, c.uniform),
      });
      assert.deepEqual(texts, c.expected[weights]);
    });
  }
}

test("streaming sees every character once, in order", async () => {
  const c = document.cases.find((x) => x.name === "long-chunks");
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

test("the bundled Shakespeare cell loads and writes text", async () => {
  const shakespeare = await VrnnCell.load(ort, bundled);
  assert.equal(shakespeare.config.hidden_size, 512);
  const [text] = await shakespeare.generate({ length: 200, prime: "ROMEO:", seed: 3 });
  assert.ok(text.startsWith("ROMEO:") && [...text].length === 206);
});

test("metadata and options are checked, with errors that say what is wrong", async () => {
  assert.throws(() => readMetadata(new Uint8Array([1, 2, 3])), VrnnError);
  const meta = readMetadata(cellBytes);
  const tweak = (key, value) => parseCellMetadata(new Map([...meta, [key, value]]));
  assert.throws(() => tweak("vrnn.format", "other"), /not a vrnn cell/);
  assert.throws(() => tweak("vrnn.schema_version", "3"), /upgrade/);
  assert.throws(() => tweak("vrnn.schema_version", "1"), /re-export/);
  assert.throws(() => tweak("vrnn.vocab", JSON.stringify(["a", "\ud800"])), /single characters/);
  assert.throws(() => tweak("vrnn.start_char", "\u4e00"), /start character/);
  await assert.rejects(cell.generate({ length: 5, temperature: 0 }), /temperature/);
  await assert.rejects(cell.generate({ length: 5, topK: 0 }), /topK/);
  await assert.rejects(cell.generate({ length: 5, greedy: true, topP: 0.5 }), /greedy/);
  await assert.rejects(cell.generate({ length: 5, prime: "\u4e00" }), /outside the vocabulary/);
});
