import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { VrnnCell } from "../vrnn.mjs";

const model = readFileSync(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url));
const cell = await VrnnCell.load(ort, model);
const [text] = await cell.generate({ length: 300, prime: "ROMEO:", temperature: 0.8, seed: 1 });
console.log(text);
