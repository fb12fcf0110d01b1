// The package from TypeScript: every name vrnn.mjs exports, used as a program would use it, type-checked
// against vrnn.d.ts (strict) by test/types.test.mjs, which also compiles it and runs it on the bundled cell.
//   node typed.js CELL.onnx    (compiled: npx tsc -p . --noEmit false --outDir OUT)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import type * as OrtWeb from "onnxruntime-web";
import {
  ArrayNoise,
  CELL_FORMAT,
  CELL_SCHEMA_VERSION,
  FORCED_UNIFORM,
  INPUT_NAMES,
  INPUT_NAMES_V2,
  MAX_CALL_STEPS,
  MAX_HELD_CHARS,
  MAX_LATENT_TEMPERATURE,
  MAX_LENGTH,
  MAX_SAMPLES,
  MAX_SEED,
  MAX_STOPS,
  MAX_STOP_CHARS,
  OLDEST_SCHEMA_VERSION,
  OUTPUT_NAMES,
  SAMPLE_OPTIONS,
  SeededNoise,
  StopMatcher,
  VrnnCell,
  VrnnError,
  WEIGHT_FORMATS,
  callSteps,
  cellInputs,
  checkSignature,
  checkStops,
  chooseFiltered,
  chooseGreedy,
  chooseUnfiltered,
  cutAtStop,
  isFiltered,
  parseCellMetadata,
  readMetadata,
  readSignature,
  rowOptions,
  stoppedStream,
} from "vrnn";
import type {
  CellConfig,
  CellInfo,
  CellSource,
  CellState,
  Completion,
  Dim,
  FinishReason,
  GenerateOptions,
  Noise,
  OrtModule,
  OrtSession,
  OrtSessionOptions,
  OrtTensor,
  OrtTensorConstructor,
  RowOptions,
  SampleOptions,
  StepResult,
  WeightFormat,
} from "vrnn";

// Both onnxruntime packages fit the module VrnnCell.load takes: Node's here, the browser's in a page.
const nodeRuntime: OrtModule = ort;
type WebFits = typeof OrtWeb extends OrtModule ? true : false;
const webFits: WebFits = true;
const tensors: OrtTensorConstructor = ort.Tensor;

// --- what a cell is, from its bytes alone ----------------------------------------------------------------

const path = process.argv[2] ?? "runtime/bundled-cell/shakespeare.onnx";
const bytes = new Uint8Array(readFileSync(path));
const meta: Map<string, string> = readMetadata(bytes);
assert.equal(meta.get("vrnn.format"), CELL_FORMAT);
const info: CellInfo = parseCellMetadata(meta);
const config: CellConfig = info.config;
const source: CellSource = info.source;
const weights: WeightFormat = info.weights;
assert.ok(WEIGHT_FORMATS.includes(weights));
assert.ok(info.version >= OLDEST_SCHEMA_VERSION && info.version <= CELL_SCHEMA_VERSION);
const shapes: Map<string, Dim[] | null> = readSignature(bytes);
checkSignature(shapes, config, info.version); // throws VrnnError where the graph and the metadata disagree
const inputs: readonly string[] = cellInputs(info.version);
assert.deepEqual(inputs, info.version === 2 ? INPUT_NAMES_V2 : INPUT_NAMES);
for (const name of [...inputs, ...OUTPUT_NAMES]) assert.ok(shapes.has(name), name);
console.log(`${path}: schema ${info.version}, ${weights} weights, ${config.vocab_size} characters, ` +
            `hidden ${config.hidden_size}, step ${source.step ?? "?"}, corpus ${source.corpus?.name ?? "?"}`);

// --- generating --------------------------------------------------------------------------------------------

const sessionOptions: OrtSessionOptions = { intraOpNumThreads: 1 };
const cell: VrnnCell = await VrnnCell.load(nodeRuntime, bytes, sessionOptions);
const session: OrtSession = cell.session;
assert.deepEqual([...session.inputNames], [...inputs]);
assert.equal(cell.choosesPerRow, cell.version >= 3);

/** A request's options, refused here in the runtime's own bounds before any work starts. */
function request(length: number, batch: number, seed: bigint): GenerateOptions {
  if (length > MAX_LENGTH) throw new RangeError(`at most ${MAX_LENGTH} characters per call`);
  if (batch > MAX_SAMPLES || (batch > 1 && batch * length > MAX_HELD_CHARS)) throw new RangeError("batch too large");
  if (seed > MAX_SEED) throw new RangeError("seed too large");
  return { length, batch, seed, prime: "ROMEO:", stepsPerCall: Math.min(32, MAX_CALL_STEPS) };
}

// Three samples, each with its own options: one per sample, fields left out taken from the top level.
const perSample: SampleOptions[] = [
  { temperature: 0.8 },
  { topK: 5, topP: 0.9 },
  { greedy: true, temperature: 1, latentTemperature: Math.min(0.5, MAX_LATENT_TEMPERATURE) },
];
for (const options of perSample) {
  const given = SAMPLE_OPTIONS.filter((key) => options[key] !== undefined);
  console.log(`options ${given.join(", ")}: ${isFiltered(options) ? "filtered" : "unfiltered"}`);
}
const streamed: string[] = ["", "", ""];
const stop = checkStops(["\n\n", "KING"]);
assert.ok(stop.length <= MAX_STOPS && stop.every((s) => [...s].length <= MAX_STOP_CHARS));
const completions: Completion[] = await cell.complete({
  ...request(200, perSample.length, 2n ** 40n),
  perSample,
  stop,
  onText: (pieces: string[]) => pieces.forEach((piece, b) => (streamed[b] += piece)),
});
completions.forEach(({ text, finishReason }: Completion, b: number) => {
  const reason: FinishReason = finishReason;
  assert.equal(streamed[b], text); // the streamed pieces join into the text
  console.log(`sample ${b} (${reason}): ${JSON.stringify(text.slice(0, 60))}`);
});

// The same samples without stop, streamed as the cell picks them: each stopped text is a prefix of its own.
let calls = 0;
const whole: string[] = await cell.generate({
  ...request(200, perSample.length, 2n ** 40n),
  perSample,
  onChars: (rows: string[][]) => {
    calls += 1;
    assert.equal(rows[0]?.length, perSample.length);
  },
});
assert.ok(calls >= Math.ceil(200 / callSteps(perSample.length)));
whole.forEach((text, b) => {
  const generated = text.slice("ROMEO:".length);
  const [cut, stopped] = cutAtStop(generated, stop);
  assert.equal(cut, completions[b]?.text);
  assert.equal(stopped ? "stop" : "length", completions[b]?.finishReason);
  assert.equal([...stoppedStream(generated, stop)].join(""), cut); // the same cut, a character at a time
});

// A stop matcher by hand, as a server streaming text to a client would use one.
const matcher = new StopMatcher(stop);
let sent = "";
for (const char of "To be\n\nor not") {
  sent += matcher.feed(char);
  if (matcher.stopped) break;
}
sent += matcher.flush();
assert.equal(sent, "To be");
assert.equal(matcher.pending, "");

// --- noise: a seed's streams replayed from arrays give the same text ------------------------------------

const length = 50;
const latent = cell.config.latent_size;
const drawn = new SeededNoise(7);
const eps = drawn.eps(("ROMEO:".length + length) * latent); // batch 1: a latent vector per step, prime included
const uniform = drawn.uniform(length); // one uniform number per sampled step
const replayed: Noise = new ArrayNoise(eps, uniform);
const [fromSeed] = await cell.generate({ length, prime: "ROMEO:", seed: 7 });
const [fromArrays] = await cell.generate({ length, prime: "ROMEO:", noise: replayed });
assert.equal(fromArrays, fromSeed);

// --- one step by hand: the cell's own pick against the host-side choices --------------------------------

const start = cell.index.get(cell.startChar);
const primed = cell.index.get("R");
assert.ok(start !== undefined && primed !== undefined);
const noise = new SeededNoise(3);
const zero: CellState = cell.initialState(1);
// The prime "R": a forced step (uniform FORCED_UNIFORM, no options) whose pick is discarded for "R" itself.
const forced: StepResult = await cell.steps([start], zero, noise.eps(latent),
                                            new Float64Array([FORCED_UNIFORM]), rowOptions([{}]), 1);
const greedyRows: RowOptions = rowOptions([{ greedy: true }]);
const u = noise.uniform(1);
const step: StepResult = await cell.steps([primed], forced.state, noise.eps(latent), u, greedyRows, 1);
const vocab = cell.vocab.length;
const picked = Number(step.chars[0]);
cell.checkPick(picked);
assert.equal(picked, chooseGreedy(step.logits, 0, vocab));
assert.equal(chooseFiltered(step.logits, 0, vocab, u[0] ?? 0, { topK: 1 }), picked);
const unfiltered = chooseUnfiltered(step.logits, 0, vocab, u[0] ?? 0, 0.8);
console.log(`greedy picks ${JSON.stringify(cell.vocab[picked])}, temperature 0.8 would pick ` +
            `${JSON.stringify(cell.vocab[unfiltered])}`);
const outputs: Record<string, OrtTensor> = await session.run({
  prev_char: new tensors("int64", new BigInt64Array([BigInt(start)]), [1]),
  h: new tensors("float32", zero.h, [config.layers, 1, config.hidden_size]),
  phi_z: new tensors("float32", zero.phiZ, [1, config.embed_size]),
  eps: new tensors("float32", new Float32Array(latent), [1, 1, latent]),
  uniform: new tensors("float64", new Float64Array([FORCED_UNIFORM]), [1, 1]),
  temperature: new tensors("float64", new Float64Array([1]), cell.choosesPerRow ? [1] : []),
  ...(cell.choosesPerRow ? {
    top_k: new tensors("int64", new BigInt64Array([0n]), [1]),
    top_p: new tensors("float64", new Float64Array([1]), [1]),
  } : {}),
});
assert.deepEqual(Object.keys(outputs).sort(), [...OUTPUT_NAMES].sort());

// --- errors --------------------------------------------------------------------------------------------

try {
  await cell.generate({ length: 10, temperature: 0 });
  assert.fail("temperature 0 was taken");
} catch (error) {
  assert.ok(error instanceof VrnnError, String(error));
  console.log(`refused: ${error.message}`);
}
console.log(`types: onnxruntime-web fits ${webFits}`);
