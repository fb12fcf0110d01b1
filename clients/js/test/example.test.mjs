// The README's JavaScript example (clients/js/examples/sample.mjs) runs as written and prints what this module
// generates for its options.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { VrnnCell } from "../vrnn.mjs";

test("examples/sample.mjs prints 300 characters after the prime, as the module generates them", async () => {
  const example = fileURLToPath(new URL("../examples/sample.mjs", import.meta.url));
  const root = fileURLToPath(new URL("../../../", import.meta.url));
  const printed = execFileSync(process.execPath, [example], { cwd: root, encoding: "utf8" });
  const model = readFileSync(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url));
  const cell = await VrnnCell.load(ort, model);
  const [text] = await cell.generate({ length: 300, prime: "ROMEO:", temperature: 0.8, seed: 1 });
  assert.equal(printed, `${text}\n`);
  assert.ok(text.startsWith("ROMEO:") && [...text].length === 306);
});
