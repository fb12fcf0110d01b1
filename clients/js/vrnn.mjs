// vrnn for JavaScript: sample text from a vrnn cell (docs/cell-spec.md, schema 3; schema 2 read as its
// section 7 says) with onnxruntime.
//
// One ES module, no build step, no dependency of its own: pass it the onnxruntime you have
// (`import * as ort from "onnxruntime-node"` or "onnxruntime-web"), so the same code runs in Node and in a
// browser.  Given the same noise it prints the same text as the Python runtime, byte for byte (the
// conformance fixtures in tests/conformance prove it); its own seeded noise (SeededNoise) is not numpy's.

export const CELL_FORMAT = "vrnn-cell";
// 3: each row's own temperature, top-k and top-p, picked in-graph (any mix of options runs N steps a call).
// 2: one temperature for the batch; top-k, top-p and greedy chosen here from one step's logits.  1: refused.
export const CELL_SCHEMA_VERSION = 3;
export const OLDEST_SCHEMA_VERSION = 2;
export const WEIGHT_FORMATS = ["float32", "float16", "int8"]; // metadata vrnn.weights (absent: float32)
export const INPUT_NAMES = ["prev_char", "h", "phi_z", "eps", "uniform", "temperature", "top_k", "top_p"];
export const INPUT_NAMES_V2 = ["prev_char", "h", "phi_z", "eps", "uniform", "temperature"];
/** The inputs, in order, of a cell of schema `version` (OLDEST_SCHEMA_VERSION to CELL_SCHEMA_VERSION). */
export const cellInputs = (version) => (version === 2 ? INPUT_NAMES_V2 : INPUT_NAMES);
export const OUTPUT_NAMES = ["chars", "logits", "h_out", "phi_z_out"];
export const FORCED_UNIFORM = 0.5;
// The bounds every runtime applies (docs/cell-spec.md section 4.4), the Python runtime's numbers.
export const MAX_LENGTH = 10_000_000; // characters per call: beyond this, ask for it in pieces
export const MAX_SAMPLES = 4096;
export const MAX_HELD_CHARS = 1 << 26; // samples x length of a batch, held until done: 256 MiB of ids at most
export const MAX_LATENT_TEMPERATURE = 100;
export const MAX_SEED = 2n ** 63n - 1n; // vrnn.runtime.limits.MAX_SEED: a BigInt, as 2**63 - 1 is no exact Number
export const MAX_CALL_STEPS = 256; // steps per call at most (vrnn.runtime.loop.MAX_CALL_STEPS); stepsPerCall's bound
const MAX_CALL_VALUES = 1 << 16;

export class VrnnError extends Error {}

// --- metadata, read from the file's bytes (onnxruntime-node/-web have no metadata API) -----------------

function varint(bytes, pos) {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= bytes.length) throw new VrnnError("truncated protobuf");
    const byte = bytes[pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return [result, pos];
    shift += 7n;
    if (shift > 63n) throw new VrnnError("varint too long");
  }
}

function* fields(bytes) {
  let pos = 0;
  while (pos < bytes.length) {
    let key;
    [key, pos] = varint(bytes, pos);
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      let value;
      [value, pos] = varint(bytes, pos);
      yield [field, wire, value];
    } else if (wire === 2) {
      let size;
      [size, pos] = varint(bytes, pos);
      const end = pos + Number(size);
      if (end > bytes.length) throw new VrnnError("truncated protobuf");
      yield [field, wire, bytes.subarray(pos, end)];
      pos = end;
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
      if (pos > bytes.length) throw new VrnnError("truncated protobuf");
    } else {
      throw new VrnnError(`unsupported protobuf wire type ${wire}`);
    }
  }
}

/** The metadata_props (ModelProto field 14: key 1, value 2) of an ONNX file, as a Map of strings. */
export function readMetadata(bytes) {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const meta = new Map();
  let sawGraph = false;
  try {
    for (const [field, wire, value] of fields(bytes)) {
      if (field === 7) sawGraph = true;
      if (field !== 14 || wire !== 2) continue;
      let key = "";
      let text = "";
      for (const [f, w, v] of fields(value)) {
        if (w !== 2) continue;
        if (f === 1) key = decoder.decode(v);
        if (f === 2) text = decoder.decode(v);
      }
      meta.set(key, text);
    }
  } catch (error) {
    throw new VrnnError(`not an ONNX file (${error.message})`);
  }
  if (!sawGraph) throw new VrnnError("not an ONNX file (no graph)");
  return meta;
}

/**
 * The shapes the graph declares for its inputs and outputs (GraphProto fields 11 and 12), by name: each an
 * array of sizes (a number), symbolic sizes (their name, such as "batch") and unknown ones (null), or null
 * where no shape is declared.  onnxruntime-node and -web 1.20 do not report them.
 */
export function readSignature(bytes) {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const shapes = new Map();
  try {
    for (const [field, wire, graph] of fields(bytes)) {
      if (field !== 7 || wire !== 2) continue; // ModelProto.graph
      for (const [f, w, info] of fields(graph)) {
        if ((f !== 11 && f !== 12) || w !== 2) continue; // GraphProto.input, .output: ValueInfoProto
        let name = "";
        let shape = null;
        for (const [g, gw, value] of fields(info)) {
          if (g === 1 && gw === 2) name = decoder.decode(value);
          if (g === 2 && gw === 2) shape = tensorShape(value, decoder);
        }
        shapes.set(name, shape);
      }
    }
  } catch (error) {
    throw new VrnnError(`not an ONNX file (${error.message})`);
  }
  return shapes;
}

/** A TypeProto's tensor shape (tensor_type 1 -> shape 2 -> dim 1 -> dim_value 1 or dim_param 2), or null. */
function tensorShape(type, decoder) {
  for (const [f, w, tensor] of fields(type)) {
    if (f !== 1 || w !== 2) continue;
    for (const [g, gw, shape] of fields(tensor)) {
      if (g !== 2 || gw !== 2) continue;
      const dims = [];
      for (const [h, hw, dim] of fields(shape)) {
        if (h !== 1 || hw !== 2) continue;
        let size = null;
        for (const [k, kw, value] of fields(dim)) {
          if (k === 1 && kw === 0) size = Number(BigInt.asIntN(64, value));
          if (k === 2 && kw === 2) size = decoder.decode(value);
        }
        dims.push(size);
      }
      return dims;
    }
  }
  return null;
}

// Each input's and output's shape (docs/cell-spec.md sections 2 and 7): config fields, and the sizes a call
// picks.  Schema 3 takes each row's options ([batch]); schema 2 one temperature (rank 0) and no top_k, top_p.
const STATE_AND_NOISE = {
  prev_char: ["batch"], h: ["layers", "batch", "hidden_size"], phi_z: ["batch", "embed_size"],
  eps: ["steps", "batch", "latent_size"], uniform: ["steps", "batch"],
};
const OUTPUTS = {
  chars: ["steps", "batch"], logits: ["steps", "batch", "vocab_size"],
  h_out: ["layers", "batch", "hidden_size"], phi_z_out: ["batch", "embed_size"],
};
const SIGNATURES = {
  3: { ...STATE_AND_NOISE, temperature: ["batch"], top_k: ["batch"], top_p: ["batch"], ...OUTPUTS },
  2: { ...STATE_AND_NOISE, temperature: [], ...OUTPUTS },
};
const ROW_OPTION_INPUTS = ["top_k", "top_p"]; // the inputs schema 3 added

/**
 * Refuse a graph whose declared inputs or outputs disagree with the sizes its metadata gives (ranks, and every
 * fixed size), as the Python runtime does: before onnxruntime is handed shapes the graph cannot take, and
 * answers in its own words.  `version` is the metadata's schema version (2 or 3): it says which inputs and
 * shapes the graph must have (a graph with the other schema's inputs is refused as such).
 */
export function checkSignature(shapes, config, version = CELL_SCHEMA_VERSION) {
  const signature = SIGNATURES[version];
  if (!signature) throw new VrnnError(`no cell signature for schema version ${version}`);
  if (shapes.size > 0) { // a graph declares each of its inputs by name, shape or not
    const inputs = (names) => `input${names.length > 1 ? "s" : ""} ${names.join(" and ")}`;
    const has = ROW_OPTION_INPUTS.filter((name) => shapes.has(name));
    const lacks = ROW_OPTION_INPUTS.filter((name) => !shapes.has(name));
    const graph = version >= 3 ? (lacks.length > 0 ? `lacks the ${inputs(lacks)}` : null)
      : (has.length > 0 ? `has the ${inputs(has)} of schema 3` : null);
    if (graph !== null) {
      throw new VrnnError(`the cell's metadata says schema version ${version} but its graph ${graph}: ` +
                          "not the vrnn interface it declares");
    }
  }
  const shown = (dims) => `[${dims.map((d) => d ?? "?").join(", ")}]`;
  for (const [name, dims] of Object.entries(signature)) {
    const shape = shapes.get(name);
    if (!shape) continue; // not declared here: the interface check or the probe speaks for it
    const want = dims.map((d) => (d === "batch" || d === "steps" ? d : config[d]));
    const differs = (have, need) => typeof have === "number" && typeof need === "number" && have !== need;
    if (shape.length !== want.length || shape.some((have, i) => differs(have, want[i]))) {
      throw new VrnnError(`the cell's metadata does not describe its graph: ${name} has shape ${shown(shape)} ` +
                          `but the metadata implies ${shown(want)}`);
    }
  }
}

function isOneCharacter(c) {
  if (typeof c !== "string") return false;
  const points = [...c];
  if (points.length !== 1) return false;
  const code = points[0].codePointAt(0);
  return !(code >= 0xd800 && code <= 0xdfff); // a lone surrogate is not a character
}

// vrnn.schema_version is exactly a positive integer's decimal digits, as in the Python runtime (cell-spec.md).
const SCHEMA_VERSION_FORM = /^[1-9][0-9]*$/;

/**
 * Check that metadata describes a cell this runtime understands; returns {config, vocab, startChar, source,
 * weights, version} (version: the schema, 2 or 3).
 */
export function parseCellMetadata(meta) {
  if (meta.get("vrnn.format") !== CELL_FORMAT) throw new VrnnError("an ONNX model but not a vrnn cell");
  for (const key of ["vrnn.schema_version", "vrnn.vocab", "vrnn.start_char", "vrnn.config", "vrnn.interface"]) {
    if (!meta.has(key)) throw new VrnnError(`cell lacks metadata ${key}`);
  }
  const versionText = meta.get("vrnn.schema_version");
  if (!SCHEMA_VERSION_FORM.test(versionText)) throw new VrnnError("cell has an unreadable schema version");
  const version = Number(versionText);
  if (version < 1) throw new VrnnError(`cell has an invalid schema version ${version}`);
  if (version > CELL_SCHEMA_VERSION) {
    throw new VrnnError(`cell schema version ${version}; this runtime reads up to ${CELL_SCHEMA_VERSION}: upgrade`);
  }
  if (version < OLDEST_SCHEMA_VERSION) {  // 1 generated one character per run(): a different interface
    throw new VrnnError(`cell schema version ${version} is no longer run: re-export it with vrnn-export`);
  }
  let vocab, config, source;
  try {
    vocab = JSON.parse(meta.get("vrnn.vocab"));
    config = JSON.parse(meta.get("vrnn.config"));
    source = JSON.parse(meta.get("vrnn.source") ?? "{}");
  } catch (error) {
    throw new VrnnError(`cell has malformed metadata: ${error.message}`);
  }
  if (!Array.isArray(vocab) || vocab.length === 0 || !vocab.every(isOneCharacter)) {
    throw new VrnnError("cell vocabulary must be a list of single characters");
  }
  if (new Set(vocab).size !== vocab.length) throw new VrnnError("cell vocabulary has duplicate characters");
  for (const name of ["vocab_size", "embed_size", "hidden_size", "latent_size", "layers"]) {
    const low = name === "latent_size" ? 0 : 1;
    if (!Number.isInteger(config?.[name]) || config[name] < low || config[name] > (name === "vocab_size" ? 1 << 21 : 1 << 16)) {
      throw new VrnnError(`cell config: ${name} is missing or out of range`);
    }
  }
  if (vocab.length !== config.vocab_size) throw new VrnnError("cell vocabulary and config disagree");
  const startChar = meta.get("vrnn.start_char");
  if (!vocab.includes(startChar)) throw new VrnnError("cell start character is not in its vocabulary");
  const weights = meta.get("vrnn.weights") ?? "float32"; // how the file stores its matrices; same interface
  if (!WEIGHT_FORMATS.includes(weights)) throw new VrnnError(`cell stores its weights as ${weights}: upgrade`);
  return { config, vocab, startChar, source, weights, version };
}

// --- stop sequences (vrnn.runtime.stops) ----------------------------------------------------------------
// A text ends at the first position where some stop string has been generated whole; if several end there,
// before the one that starts earliest.  The stop string is not part of the text, the prime is never searched,
// and a stopped text is a prefix of the text the same seed and options give without `stop`.  While it
// streams, characters that could still begin a stop string are held back until they cannot.  Characters are
// Unicode code points, as Python's str counts them (a character outside the BMP is one, not two).

export const MAX_STOPS = 4; // OpenAI's bound, vrnn.runtime.stops.MAX_STOPS
export const MAX_STOP_CHARS = 256; // characters of one stop string, vrnn.runtime.stops.MAX_STOP_CHARS

/**
 * The stop strings of `stop` (one string, an array of them, or null/undefined for none) as an array, refused
 * in one line when there are more than MAX_STOPS, or one is empty, longer than MAX_STOP_CHARS or not a string.
 */
export function checkStops(stop) {
  if (stop === null || stop === undefined) return [];
  const stops = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(stops) || !stops.every((s) => typeof s === "string")) {
    throw new VrnnError("stop must be a string or an array of strings");
  }
  if (stops.length > MAX_STOPS) {
    throw new VrnnError(`stop may hold at most ${MAX_STOPS} strings, got ${stops.length}`);
  }
  for (const s of stops) {
    const chars = [...s].length;
    if (chars < 1 || chars > MAX_STOP_CHARS) {
      throw new VrnnError(`each stop string must be 1 to ${MAX_STOP_CHARS} characters, got ${chars}`);
    }
  }
  return [...stops];
}

/**
 * Feed a text's new characters one at a time; `feed` returns the characters now safe to emit, and `stopped`
 * turns true once a stop string has been generated (what follows is not part of the text).  `flush` gives the
 * characters still held back once the text has ended without a stop.  Python's StopMatcher, rule for rule.
 */
export class StopMatcher {
  #stops;
  #pending = []; // characters that may still begin a stop string

  constructor(stops) {
    this.stops = Object.freeze([...stops]);
    this.#stops = this.stops.map((s) => [...s]);
    this.longest = Math.max(0, ...this.#stops.map((s) => s.length));
    this.stopped = false;
  }

  /** The characters held back now: they may still begin a stop string. */
  get pending() {
    return this.#pending.join("");
  }

  /** Take one character; return the characters that can no longer be part of a stop string. */
  feed(char) {
    if (this.stopped) return "";
    this.#pending.push(...char);
    const pending = this.#pending;
    let earliest = -1; // where the earliest-starting stop string that just ended starts
    for (const s of this.#stops) {
      if (endsWith(pending, s)) {
        const start = pending.length - s.length;
        if (earliest < 0 || start < earliest) earliest = start;
      }
    }
    if (earliest >= 0) { // a stop string just ended: the text ends before the earliest-starting one
      this.stopped = true;
      this.#pending = [];
      return pending.slice(0, earliest).join("");
    }
    const keep = this.#openPrefix();
    const out = pending.slice(0, pending.length - keep).join("");
    this.#pending = pending.slice(pending.length - keep);
    return out;
  }

  /** The length of the longest end of the held characters that begins some stop string (and may complete it). */
  #openPrefix() {
    const pending = this.#pending;
    for (let n = Math.min(pending.length, this.longest - 1); n > 0; n--) {
      const tail = pending.slice(pending.length - n);
      if (this.#stops.some((s) => startsWith(s, tail))) return n;
    }
    return 0;
  }

  /** The characters held back, once the text has ended without a stop ("" once it has stopped). */
  flush() {
    const out = this.stopped ? "" : this.#pending.join("");
    this.#pending = [];
    return out;
  }
}

const startsWith = (chars, head) => head.length <= chars.length && head.every((c, i) => chars[i] === c);
const endsWith = (chars, tail) => {
  const offset = chars.length - tail.length;
  return offset >= 0 && tail.every((c, i) => chars[offset + i] === c);
};

/** `chars` (an iterable of characters) up to, not including, the first stop string; each as soon as it is safe. */
export function* stoppedStream(chars, stops) {
  if (stops.length === 0) {
    yield* chars;
    return;
  }
  const matcher = new StopMatcher(stops);
  for (const char of chars) {
    yield* matcher.feed(char); // one character at a time, as they are released
    if (matcher.stopped) return;
  }
  yield* matcher.flush();
}

/** [`text` up to the first stop string (StopMatcher's rule), whether one was found]. */
export function cutAtStop(text, stops) {
  const matcher = new StopMatcher(stops);
  let out = "";
  for (const char of text) {
    out += matcher.feed(char);
    if (matcher.stopped) return [out, true];
  }
  return [out + matcher.flush(), false];
}

// --- noise ----------------------------------------------------------------------------------------------

/** Noise given as arrays: eps float32 [steps x batch x latent], uniform float64 [steps x batch], in order. */
export class ArrayNoise {
  constructor(eps, uniform) {
    this.epsValues = Float32Array.from(eps);
    this.uniformValues = Float64Array.from(uniform);
    this.epsPos = 0;
    this.uniformPos = 0;
  }
  eps(count) {
    if (this.epsPos + count > this.epsValues.length) throw new VrnnError("not enough latent noise");
    const out = this.epsValues.subarray(this.epsPos, this.epsPos + count);
    this.epsPos += count;
    return out;
  }
  uniform(count) {
    if (this.uniformPos + count > this.uniformValues.length) throw new VrnnError("not enough uniform noise");
    const out = this.uniformValues.subarray(this.uniformPos, this.uniformPos + count);
    this.uniformPos += count;
    return out;
  }
}

// xoshiro128** (Blackman and Vigna), seeded by splitmix32; two independent streams as numpy's two children.
function splitmix32(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

function xoshiro128(seed) {
  const next = splitmix32(seed);
  const s = new Uint32Array([next(), next(), next(), next()]);
  const rotl = (x, k) => ((x << k) | (x >>> (32 - k))) >>> 0;
  return () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
}

/** This runtime's own seeded noise: same seed, same text (in this runtime; numpy's streams differ). */
export class SeededNoise {
  constructor(seed) {
    // A BigInt seed gives the text of the Number with the same value (both keep their low 32 bits).
    const base = typeof seed === "bigint" ? Number(BigInt.asUintN(32, seed))
      : Number.isInteger(seed) ? seed : Math.floor(Math.random() * 2 ** 32);
    const bits = { eps: xoshiro128(base ^ 0x5eed0001), uniform: xoshiro128(base ^ 0x5eed0002) };
    // 53-bit doubles in [0, 1) from two 32-bit words
    this.nextUniform = () => ((bits.uniform() >>> 5) * 67108864 + (bits.uniform() >>> 6)) / 9007199254740992;
    const epsUniform = () => ((bits.eps() >>> 5) * 67108864 + (bits.eps() >>> 6)) / 9007199254740992;
    this.spare = null;
    this.nextNormal = () => {
      if (this.spare !== null) {
        const value = this.spare;
        this.spare = null;
        return value;
      }
      let u;
      do u = epsUniform(); while (u === 0);
      const radius = Math.sqrt(-2 * Math.log(u));
      const angle = 2 * Math.PI * epsUniform();
      this.spare = radius * Math.sin(angle);
      return radius * Math.cos(angle);
    };
  }
  eps(count) {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = this.nextNormal();
    return out;
  }
  uniform(count) {
    const out = new Float64Array(count);
    for (let i = 0; i < count; i++) out[i] = this.nextUniform();
    return out;
  }
}

// --- choosing a character (docs/cell-spec.md section 4) ----------------------------------------------
// A schema-3 cell makes every pick in-graph.  These are the host-side choices a schema-2 cell needs for
// top-k, top-p and greedy (section 7), the same arithmetic as vrnn.runtime.choice.

function scaled(logits, offset, vocab, temperature) {
  const s = new Float64Array(vocab);
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[offset + i]);
  for (let i = 0; i < vocab; i++) {
    s[i] = logits[offset + i] - max;
    if (temperature !== 1) s[i] /= temperature;
  }
  return s;
}

/**
 * Whether options filter (section 4): greedy, a top-k, or a top-p below 1.  A top-p of 1 is no top-p (it
 * would cut nothing a user asked to keep), as Python's SamplingOptions.unfiltered says.
 */
export function isFiltered({ topK = null, topP = null, greedy = false } = {}) {
  return Boolean(greedy) || topK !== null || (topP !== null && topP < 1);
}

/** Greedy: the first index of the largest logit. */
export function chooseGreedy(logits, offset, vocab) {
  let best = 0;
  for (let i = 1; i < vocab; i++) if (logits[offset + i] > logits[offset + best]) best = i;
  return best;
}

/** Unfiltered (section 4.1), what the cell computes in-graph: inverse CDF, u scaled by the running total. */
export function chooseUnfiltered(logits, offset, vocab, u, temperature = 1) {
  const s = scaled(logits, offset, vocab, temperature);
  const cdf = new Float64Array(vocab);
  let running = 0;
  for (let i = 0; i < vocab; i++) {
    running += Math.exp(s[i]);
    cdf[i] = running;
  }
  const threshold = u * cdf[vocab - 1];
  let picked = 0;
  for (let i = 0; i < vocab; i++) if (cdf[i] <= threshold) picked++;
  if (picked >= vocab) { // u * total rounded up to the total: the last character with non-zero weight
    picked = 0;
    while (cdf[picked] < cdf[vocab - 1]) picked++;
  }
  return picked;
}

/**
 * Top-k and/or top-p (section 4.2) from one row of logits with the step's uniform number u.  topK null: no
 * top-k; topP null or 1: no top-p.  With neither it is the unfiltered choice (section 4.1), as in Python.
 */
export function chooseFiltered(logits, offset, vocab, u, { temperature = 1, topK = null, topP = null } = {}) {
  const cutsMass = topP !== null && topP < 1;
  if (topK === null && !cutsMass) return chooseUnfiltered(logits, offset, vocab, u, temperature);
  const s = scaled(logits, offset, vocab, temperature);
  const order = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => s[b] - s[a] || a - b); // stable
  const probs = new Float64Array(vocab);
  for (let j = 0; j < vocab; j++) probs[j] = topK !== null && j >= topK ? 0 : Math.exp(s[order[j]]);
  let total = 0;
  for (let j = 0; j < vocab; j++) total += probs[j];
  for (let j = 0; j < vocab; j++) probs[j] /= total;
  if (cutsMass) {
    let running = 0;
    for (let j = 0; j < vocab; j++) {
      running += probs[j];
      if (!(running - probs[j] < topP)) probs[j] = 0;
    }
  }
  const cdf = new Float64Array(vocab);
  let running = 0;
  let lastNonZero = 0;
  for (let j = 0; j < vocab; j++) {
    running += probs[j];
    cdf[j] = running;
    if (probs[j] > 0) lastNonZero = j;
  }
  let picked = 0;
  for (let j = 0; j < vocab; j++) if (cdf[j] / cdf[vocab - 1] <= u) picked++;
  return order[Math.min(picked, lastNonZero)];
}

/**
 * Each sample's options as a schema-3 cell's inputs take them (docs/cell-spec.md sections 2 and 4.3):
 * {temperature: Float64Array [B], topK: BigInt64Array [B] (0: none), topP: Float64Array [B] (1: none)}, with
 * greedy given as top_k 1 at temperature 1 and top_p 1, which picks the same character.  The latent
 * temperature is not here: it scales a sample's noise before the cell sees it.
 */
export function rowOptions(samples) {
  const batch = samples.length;
  const rows = { temperature: new Float64Array(batch), topK: new BigInt64Array(batch), topP: new Float64Array(batch) };
  samples.forEach((o, b) => {
    rows.temperature[b] = o.greedy ? 1 : (o.temperature ?? 1);
    rows.topK[b] = BigInt(o.greedy ? 1 : (o.topK ?? 0));
    rows.topP[b] = o.greedy ? 1 : (o.topP ?? 1);
  });
  return rows;
}

/** How many steps one call runs for a batch of `batch` samples, for every option (docs/cell-spec.md 3). */
export function callSteps(batch) {
  return Math.max(1, Math.min(MAX_CALL_STEPS, Math.floor(MAX_CALL_VALUES / batch)));
}

// The options that may differ from one sample to the next (generate's perSample).
export const SAMPLE_OPTIONS = ["temperature", "topK", "topP", "greedy", "latentTemperature"];

/** Refuse sampling options that cannot work (section 4.4); `where` prefixes the message (a perSample entry). */
function checkSampling(o, vocabSize, where = "") {
  const finite = (x) => typeof x === "number" && Number.isFinite(x);
  const refuse = (message) => { throw new VrnnError(where + message); };
  if (!finite(o.temperature) || o.temperature <= 0) refuse("temperature must be a finite number > 0");
  if (o.topK !== null && !(Number.isInteger(o.topK) && o.topK >= 1 && o.topK <= vocabSize)) {
    refuse(`topK must be an integer from 1 to ${vocabSize}`);
  }
  if (o.topP !== null && !(finite(o.topP) && o.topP > 0 && o.topP <= 1)) refuse("topP must be in (0, 1]");
  if (typeof o.greedy !== "boolean") refuse("greedy must be true or false");
  if (o.greedy && (o.topK !== null || o.topP !== null || o.temperature !== 1)) {
    refuse("greedy cannot be combined with temperature, topK or topP");
  }
  if (!finite(o.latentTemperature) || o.latentTemperature < 0 || o.latentTemperature > MAX_LATENT_TEMPERATURE) {
    refuse(`latentTemperature must be a finite number in [0, ${MAX_LATENT_TEMPERATURE}]`);
  }
}

/** Refuse a length, batch, seed or stepsPerCall outside the Python runtime's bounds (section 4.4). */
function checkRun(o) {
  if (!Number.isInteger(o.length) || o.length < 1 || o.length > MAX_LENGTH) {
    throw new VrnnError(`length must be an integer from 1 to ${MAX_LENGTH}`);
  }
  if (!Number.isInteger(o.batch) || o.batch < 1 || o.batch > MAX_SAMPLES) {
    throw new VrnnError(`batch must be an integer from 1 to ${MAX_SAMPLES}`);
  }
  // A seed is what vrnn-run --seed takes, 0 to 2**63-1 (a Number, or a BigInt for the values past 2**53), or
  // null for fresh entropy: anything else would silently give a text no seed reproduces.
  const integer = Number.isInteger(o.seed) || typeof o.seed === "bigint";
  if (o.seed !== null && !(integer && BigInt(o.seed) >= 0n && BigInt(o.seed) <= MAX_SEED)) {
    throw new VrnnError("seed must be null or an integer from 0 to 2**63-1");
  }
  if (o.stepsPerCall !== null && !(Number.isInteger(o.stepsPerCall) && o.stepsPerCall >= 1 &&
                                   o.stepsPerCall <= MAX_CALL_STEPS)) {
    throw new VrnnError(`stepsPerCall must be null or an integer from 1 to ${MAX_CALL_STEPS}`);
  }
  if (o.batch > 1 && o.batch * o.length > MAX_HELD_CHARS) {
    throw new VrnnError(`batch ${o.batch} x length ${o.length} is more than the ${MAX_HELD_CHARS} characters a ` +
                        "batch may hold until it is done: ask for fewer, or one sample at a time");
  }
}

/**
 * Every sample's options: `defaults` for each, or perSample's entries (one per sample), each field an entry
 * leaves out (or gives as undefined) taken from `defaults`.  Each entry is checked as the top-level options are.
 */
function samplesOf(perSample, defaults, batch, vocabSize) {
  if (perSample === null || perSample === undefined) return new Array(batch).fill(defaults);
  if (!Array.isArray(perSample)) {
    throw new VrnnError("perSample must be null or an array of one options object per sample");
  }
  if (perSample.length !== batch) {
    throw new VrnnError(`perSample has ${perSample.length} entries for a batch of ${batch}: give one per sample`);
  }
  return perSample.map((entry, i) => {
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      throw new VrnnError(`perSample[${i}] must be an object of options`);
    }
    const unknown = Object.keys(entry).find((key) => !SAMPLE_OPTIONS.includes(key));
    if (unknown !== undefined) {
      throw new VrnnError(`perSample[${i}] has an unknown option ${JSON.stringify(unknown)} ` +
                          `(it takes ${SAMPLE_OPTIONS.join(", ")})`);
    }
    const merged = { ...defaults };
    for (const key of SAMPLE_OPTIONS) if (entry[key] !== undefined) merged[key] = entry[key];
    checkSampling(merged, vocabSize, `perSample[${i}]: `);
    return merged;
  });
}

const sameOptions = (a, b) => SAMPLE_OPTIONS.every((key) => a[key] === b[key]);

// --- the cell ----------------------------------------------------------------------------------------------

/** The first line of an error's message (onnxruntime's run over several), at most 300 characters. */
function firstLine(error) {
  return (String(error?.message ?? error).trim().split("\n")[0] || String(error?.name)).slice(0, 300);
}

export class VrnnCell {
  /** Load a cell from its bytes (Uint8Array) with the given onnxruntime module; checks metadata and interface. */
  static async load(ort, bytes, sessionOptions = {}) {
    const info = parseCellMetadata(readMetadata(bytes));
    checkSignature(readSignature(bytes), info.config, info.version);
    let session;
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions);
    } catch (error) {
      throw new VrnnError(`onnxruntime could not load the cell: ${firstLine(error)}`);
    }
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    if (!same(session.inputNames, cellInputs(info.version)) || !same(session.outputNames, OUTPUT_NAMES)) {
      throw new VrnnError(`cell has inputs ${session.inputNames} and outputs ${session.outputNames}: not the vrnn ` +
                          `interface of schema ${info.version}`);
    }
    const cell = new VrnnCell(ort, session, info);
    await cell.probe();
    return cell;
  }

  constructor(ort, session, { config, vocab, startChar, source, weights, version = CELL_SCHEMA_VERSION }) {
    this.ort = ort;
    this.weights = weights;
    this.version = version; // vrnn.schema_version: 3 takes each row's options, 2 one temperature
    this.session = session;
    this.config = config;
    this.vocab = vocab;
    this.startChar = startChar;
    this.source = source;
    this.index = new Map(vocab.map((c, i) => [c, i]));
  }

  /**
   * Whether the cell applies each sample's own options in-graph (schema 3), so that any options, mixed or not,
   * run many steps per call.  A schema-2 cell takes one temperature; top-k, top-p and greedy are then chosen
   * here from one step's logits, one step per call, and a batch takes one set of options.
   */
  get choosesPerRow() {
    return this.version >= 3;
  }

  initialState(batch) {
    const { layers: L, hidden_size: H, embed_size: E } = this.config;
    return { h: new Float32Array(L * batch * H), phiZ: new Float32Array(batch * E) };
  }

  /**
   * One run(): n steps for `batch` samples.  `rows`: each sample's options (rowOptions), or a temperature for
   * every sample without top-k or top-p.  A schema-2 cell takes the first row's temperature for every row and
   * no top-k or top-p (its caller chooses those).  Returns {chars: BigInt64Array [n*batch], logits, state}.
   */
  async steps(prev, state, eps, uniform, rows, batch) {
    const { layers: L, hidden_size: H, embed_size: E, latent_size: Z } = this.config;
    const n = uniform.length / batch;
    const T = this.ort.Tensor;
    const options = typeof rows === "number" ? rowOptions(new Array(batch).fill({ temperature: rows })) : rows;
    const feeds = {
      prev_char: new T("int64", BigInt64Array.from(prev, (c) => BigInt(c)), [batch]),
      h: new T("float32", state.h, [L, batch, H]),
      phi_z: new T("float32", state.phiZ, [batch, E]),
      eps: new T("float32", eps, [n, batch, Z]),
      uniform: new T("float64", uniform, [n, batch]),
    };
    if (this.choosesPerRow) {
      feeds.temperature = new T("float64", options.temperature, [batch]);
      feeds.top_k = new T("int64", options.topK, [batch]);
      feeds.top_p = new T("float64", options.topP, [batch]);
    } else {
      feeds.temperature = new T("float64", new Float64Array([options.temperature[0]]), []);
    }
    let out;
    try {
      out = await this.session.run(feeds);
    } catch (error) { // onnxruntime's own text runs over several lines: one line, in this runtime's error type
      if (error instanceof VrnnError) throw error;
      throw new VrnnError(`onnxruntime failed running the cell: ${firstLine(error)}`);
    }
    const logits = out.logits.data;
    for (let i = 0; i < logits.length; i++) {
      if (!Number.isFinite(logits[i])) throw new VrnnError("the cell produced non-finite logits: its weights are broken");
    }
    return { chars: out.chars.data, logits, state: { h: out.h_out.data, phiZ: out.phi_z_out.data } };
  }

  /**
   * Two steps of two samples from the zero state: output sizes as the metadata says, picks inside the
   * vocabulary.  The second sample has a top-k and a top-p, so that a schema-3 cell's sorting path runs too.
   */
  async probe() {
    const { latent_size: Z, vocab_size: V, hidden_size: H, embed_size: E, layers: L } = this.config;
    const start = this.index.get(this.startChar);
    const batch = 2;
    const rows = rowOptions([{}, { topK: Math.min(2, V), topP: 0.9 }]);
    const r = await this.steps([start, start], this.initialState(batch), new Float32Array(2 * batch * Z),
                               new Float64Array(2 * batch).fill(0.5), rows, batch);
    if (r.chars.length !== 2 * batch || r.logits.length !== 2 * batch * V || r.state.h.length !== L * batch * H ||
        r.state.phiZ.length !== batch * E) {
      throw new VrnnError("the cell's outputs do not have the sizes its metadata implies");
    }
    for (const c of r.chars) this.checkPick(Number(c));
  }

  /** Refuse a picked character id outside the vocabulary: a broken cell, whose text would be wrong. */
  checkPick(c) {
    const V = this.vocab.length;
    if (!(Number.isInteger(c) && c >= 0 && c < V)) {
      throw new VrnnError(`the cell picked character id ${c}, outside its vocabulary of ${V} characters: it is broken`);
    }
  }

  /**
   * Generate `length` characters per sample after `prime` (docs/cell-spec.md section 3).  Returns one text
   * per sample: the prime followed by the sampled characters, up to (not including) the first stop string
   * when `stop` is given (complete() also says which texts stopped).  Noise: `noise` (e.g. an ArrayNoise of
   * given arrays), else this runtime's SeededNoise(seed).
   *
   * Options: temperature, topK, topP (1: none), greedy, latentTemperature, for every sample; or `perSample`,
   * an array of one object per sample (perSample.length === batch) with any of those five fields, each field
   * it leaves out taken from the top-level options (so an entry overrides a top-level greedy with
   * `greedy: false`).  A schema-3 cell runs any options, mixed or not, up to callSteps(batch) steps per call;
   * a schema-2 cell runs top-k, top-p and greedy one step per call and refuses a batch of mixed options.
   * `stepsPerCall` lowers the steps per call (smoother streaming); the text is the same.
   *
   * `stop`: a string or an array of up to MAX_STOPS (checkStops); each sample's text ends just before the
   * first stop string it generates (StopMatcher's rule; the prime is not searched), each sample on its own,
   * and the cell is run no more once every sample has stopped.  A stopped text is a prefix of the text the
   * same seed and options give without `stop`.
   *
   * Streaming: `onText(pieces)` comes once per sampling call with pieces[b], sample b's characters released by
   * that call (a string, maybe empty): with `stop`, none past a stop string, and characters that may begin
   * one are held back until they cannot (the last call releases what is still held), so that the pieces join
   * into exactly the text returned.  `onChars(rows)` sees each call's characters as the cell picks them
   * (rows[i][b] is sample b's i-th new character), before any stop: it is refused with `stop`.
   */
  async generate(options = {}) {
    const completions = await this.complete(options);
    const prime = options.prime ?? "";
    return completions.map((c) => prime + c.text);
  }

  /**
   * generate(), with why each sample ended (Python's Sampler.complete): one {text, finishReason} per sample,
   * `text` the new characters only (no prime), finishReason "stop" (a stop string was generated; the text ends
   * just before it) or "length" (`length` characters were generated).  Takes generate()'s options.
   */
  async complete({
    length = 500, prime = "", temperature = 1, topK = null, topP = null, greedy = false,
    latentTemperature = 1, batch = 1, seed = null, noise = null, onChars = null, onText = null, stepsPerCall = null,
    perSample = null, stop = null,
  } = {}) {
    const stops = checkStops(stop);
    if (stops.length > 0 && onChars !== null) {
      throw new VrnnError("onChars sees the characters before any stop string is cut: with stop, stream with onText");
    }
    const defaults = { temperature, topK, topP, greedy, latentTemperature };
    checkSampling(defaults, this.vocab.length);
    checkRun({ length, batch, seed, stepsPerCall });
    const samples = samplesOf(perSample, defaults, batch, this.vocab.length);
    if (!this.choosesPerRow && samples.some((o) => !sameOptions(o, samples[0]))) {
      throw new VrnnError(`this cell is of schema ${this.version}: it takes one set of options for the whole batch, ` +
                          "and perSample gives different ones; re-export it with vrnn-export to mix them");
    }
    const primeChars = [...prime];
    for (const c of primeChars) if (!this.index.has(c)) throw new VrnnError(`prime has a character outside the vocabulary: ${JSON.stringify(c)}`);
    noise ??= new SeededNoise(seed);
    const { latent_size: Z, vocab_size: V } = this.config;
    // Each sample's noise times its own float32 latent temperature: a float32 product (two float32 values
    // multiply exactly in a double, rounded once on the store).  x 1 is exact, so unscaled rows are unchanged.
    const scales = Float32Array.from(samples, (o) => o.latentTemperature);
    const unscaled = scales.every((s) => s === 1);
    const scaleEps = (values) => {
      if (unscaled) return values;
      const out = new Float32Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = values[i] * scales[Math.floor(i / Z) % batch];
      return out;
    };
    const rows = rowOptions(samples);
    let state = this.initialState(batch);
    let prev = new Array(batch).fill(this.index.get(this.startChar));
    // Forced steps: uniform 0.5, temperature 1, no top-k, no top-p (section 3, step 2).
    const forcedRows = rowOptions(new Array(batch).fill({}));
    for (const c of primeChars) {
      const forced = new Float64Array(batch).fill(FORCED_UNIFORM);
      ({ state } = await this.steps(prev, state, scaleEps(noise.eps(batch * Z)), forced, forcedRows, batch));
      prev = new Array(batch).fill(this.index.get(c));
    }
    // A schema-3 cell picks every sample's character itself; a schema-2 cell only the unfiltered ones, and with
    // top-k, top-p or greedy (one set of options: samples[0]) the choice is made here, one step per call.
    const common = samples[0];
    const cellChooses = this.choosesPerRow || !isFiltered(common);
    // Fewer steps per call (stepsPerCall) stream more smoothly; the noise streams, and so the text, are the same.
    let perCall = cellChooses ? callSteps(batch) : 1;
    if (stepsPerCall !== null) perCall = Math.min(perCall, stepsPerCall);
    // Without stop: ids until the end, 4 bytes a character (strings grown a character at a time take ~32 bytes
    // each).  With stop: each sample's StopMatcher and the pieces of text it has released.
    const matchers = stops.length > 0 ? Array.from({ length: batch }, () => new StopMatcher(stops)) : null;
    const pieces = matchers ? Array.from({ length: batch }, () => []) : null;
    const ids = matchers ? null : Array.from({ length: batch }, () => new Int32Array(length));
    for (let done = 0; done < length; ) {
      const n = Math.min(perCall, length - done);
      const eps = scaleEps(noise.eps(n * batch * Z));
      const uniform = noise.uniform(n * batch);
      const result = await this.steps(prev, state, eps, uniform, rows, batch);
      state = result.state;
      const picked = [];
      const released = new Array(batch).fill(""); // onText's pieces for this call
      for (let i = 0; i < n; i++) {
        const row = [];
        for (let b = 0; b < batch; b++) {
          const offset = (i * batch + b) * V;
          let c;
          if (cellChooses) c = Number(result.chars[i * batch + b]);
          else if (common.greedy) c = chooseGreedy(result.logits, offset, V);
          else c = chooseFiltered(result.logits, offset, V, uniform[i * batch + b], common);
          this.checkPick(c);
          row.push(c);
          if (ids) {
            ids[b][done + i] = c;
            if (onText) released[b] += this.vocab[c];
          } else if (!matchers[b].stopped) {
            const out = matchers[b].feed(this.vocab[c]);
            if (out) {
              pieces[b].push(out);
              released[b] += out;
            }
          }
        }
        picked.push(row.map((c) => this.vocab[c]));
        prev = row;
      }
      done += n;
      const allStopped = matchers !== null && matchers.every((m) => m.stopped);
      if (matchers && (done >= length || allStopped)) { // the end: what is still held back is text
        matchers.forEach((m, b) => {
          const rest = m.flush();
          if (rest) {
            pieces[b].push(rest);
            released[b] += rest;
          }
        });
      }
      if (onChars) onChars(picked);
      if (onText) onText(released);
      if (allStopped) break; // every sample has stopped: no more calls
    }
    if (ids) return ids.map((row) => ({ text: Array.from(row, (c) => this.vocab[c]).join(""), finishReason: "length" }));
    return pieces.map((piece, b) => ({ text: piece.join(""), finishReason: matchers[b].stopped ? "stop" : "length" }));
  }
}
