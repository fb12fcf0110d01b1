// Type declarations for vrnn.mjs: every name it exports, and the shapes of what they take and give.
// test/types.test.mjs type-checks examples/typed.ts against this file (strict) and fails when vrnn.mjs
// exports a name that is not declared here, or declares one it does not export.

// --- onnxruntime, as this module uses it -----------------------------------------------------------------
// The module brings no onnxruntime of its own: pass it `import * as ort from "onnxruntime-node"` or
// "onnxruntime-web" (both satisfy OrtModule).  These are the parts of onnxruntime's API it calls, declared
// structurally so that this file needs neither package's types.

/** A tensor as onnxruntime gives it: `data` is a typed array (BigInt64Array for int64). */
export interface OrtTensor {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
}

/** An onnxruntime InferenceSession: the names of its inputs and outputs, and run(). */
export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}

/** The tensor constructors this module calls (int64, float32 and float64 tensors of given dims). */
export interface OrtTensorConstructor {
  new (type: "int64", data: BigInt64Array, dims?: readonly number[]): OrtTensor;
  new (type: "float32", data: Float32Array, dims?: readonly number[]): OrtTensor;
  new (type: "float64", data: Float64Array, dims?: readonly number[]): OrtTensor;
}

/** onnxruntime's session options (`intraOpNumThreads`, `executionProviders`, ...), passed through as given. */
export type OrtSessionOptions = object;

/** An onnxruntime module: `import * as ort from "onnxruntime-node"` or `"onnxruntime-web"`. */
export interface OrtModule {
  readonly InferenceSession: {
    create(bytes: Uint8Array, options?: OrtSessionOptions): Promise<OrtSession>;
  };
  readonly Tensor: OrtTensorConstructor;
}

// --- the cell's format (docs/cell-spec.md) --------------------------------------------------------------

/** Metadata vrnn.format of every vrnn cell. */
export declare const CELL_FORMAT: "vrnn-cell";
/** The newest cell schema this runtime reads (3: each row's own temperature, top-k and top-p, picked in-graph). */
export declare const CELL_SCHEMA_VERSION: number;
/** The oldest cell schema this runtime reads (2: one temperature; top-k, top-p and greedy chosen here). */
export declare const OLDEST_SCHEMA_VERSION: number;

/** How a cell file stores its matrices (metadata vrnn.weights; absent means float32); the interface is the same. */
export type WeightFormat = "float32" | "float16" | "int8";
/** The weight formats this runtime reads. */
export declare const WEIGHT_FORMATS: readonly ["float32", "float16", "int8"];

/** A schema-3 cell's inputs, in order. */
export declare const INPUT_NAMES: readonly ["prev_char", "h", "phi_z", "eps", "uniform", "temperature", "top_k", "top_p"];
/** A schema-2 cell's inputs, in order (no top_k, top_p; temperature of rank 0). */
export declare const INPUT_NAMES_V2: readonly ["prev_char", "h", "phi_z", "eps", "uniform", "temperature"];
/** The inputs, in order, of a cell of schema `version` (OLDEST_SCHEMA_VERSION to CELL_SCHEMA_VERSION). */
export declare function cellInputs(version: number): typeof INPUT_NAMES | typeof INPUT_NAMES_V2;
/** Every cell's outputs, in order. */
export declare const OUTPUT_NAMES: readonly ["chars", "logits", "h_out", "phi_z_out"];
/** The uniform number of a forced (prime) step: 0.5. */
export declare const FORCED_UNIFORM: number;

// The bounds every runtime applies (docs/cell-spec.md section 4.4), the Python runtime's numbers.

/** Characters per sample per call of generate()/complete() at most (10,000,000): beyond it, ask in pieces. */
export declare const MAX_LENGTH: number;
/** Samples (batch) per call at most (4096). */
export declare const MAX_SAMPLES: number;
/** batch x length at most for a batch of more than one sample (2**26 characters, held until done). */
export declare const MAX_HELD_CHARS: number;
/** The largest latentTemperature (100). */
export declare const MAX_LATENT_TEMPERATURE: number;
/** The largest seed, 2**63 - 1: a BigInt, as that is no exact Number. */
export declare const MAX_SEED: bigint;
/** Steps per session run at most (256): stepsPerCall's upper bound. */
export declare const MAX_CALL_STEPS: number;

/** Every error this module raises itself (bad options, a file that is not a vrnn cell, a broken cell). */
export declare class VrnnError extends Error {}

// --- metadata ------------------------------------------------------------------------------------------

/** A dimension a graph declares: a size, a symbolic size's name (such as "batch"), or null where unknown. */
export type Dim = number | string | null;

/** A cell's sizes (metadata vrnn.config): the five fields checked here, and whatever else the file holds. */
export interface CellConfig {
  vocab_size: number;
  embed_size: number;
  hidden_size: number;
  latent_size: number;
  layers: number;
  [key: string]: unknown;
}

/** Where a cell came from (metadata vrnn.source, optional; `{}` when absent): every field may be missing. */
export interface CellSource {
  checkpoint_sha256?: string;
  step?: number;
  val_elbo_nats?: number;
  val_bpc?: number;
  corpus?: { name?: string; sha256?: string; [key: string]: unknown };
  opset?: number;
  posterior?: "filtering" | "smoothing";
  [key: string]: unknown;
}

/** What parseCellMetadata reads from a cell's metadata. */
export interface CellInfo {
  config: CellConfig;
  /** One character (Unicode code point) per token id. */
  vocab: string[];
  startChar: string;
  source: CellSource;
  weights: WeightFormat;
  /** The schema: 2 or 3. */
  version: number;
}

/** The metadata_props of an ONNX file's bytes, as a Map of strings; throws VrnnError if it is not an ONNX file. */
export declare function readMetadata(bytes: Uint8Array): Map<string, string>;

/**
 * The shapes the graph declares for its inputs and outputs, by name: each an array of Dims, or null where no
 * shape is declared.  Throws VrnnError if the bytes are not an ONNX file.
 */
export declare function readSignature(bytes: Uint8Array): Map<string, Dim[] | null>;

/**
 * Throws VrnnError where a graph's declared inputs or outputs (readSignature) disagree with the sizes its
 * metadata gives, or where it has the other schema's inputs.  `version`: the metadata's schema (default
 * CELL_SCHEMA_VERSION).
 */
export declare function checkSignature(
  shapes: ReadonlyMap<string, readonly Dim[] | null>,
  config: CellConfig,
  version?: number,
): void;

/** Check that metadata (readMetadata) describes a cell this runtime reads; throws VrnnError where not. */
export declare function parseCellMetadata(meta: ReadonlyMap<string, string>): CellInfo;

// --- stop sequences ------------------------------------------------------------------------------------

/** Stop strings per request at most (4). */
export declare const MAX_STOPS: number;
/** Characters (code points) of one stop string at most (256). */
export declare const MAX_STOP_CHARS: number;

/**
 * The stop strings of `stop` (a string, an array of them, or null/undefined for none) as a new array; throws
 * VrnnError for more than MAX_STOPS, or one empty, longer than MAX_STOP_CHARS or not a string.
 */
export declare function checkStops(stop: string | readonly string[] | null | undefined): string[];

/**
 * Feed a text's new characters one at a time; feed() returns the characters now safe to emit, and `stopped`
 * turns true once a stop string has been generated (what follows is not part of the text).  flush() gives the
 * characters still held back once the text has ended without a stop.  Python's StopMatcher, rule for rule.
 */
export declare class StopMatcher {
  /** `stops`: the stop strings (checked with checkStops by the callers in this module). */
  constructor(stops: Iterable<string>);
  readonly stops: readonly string[];
  /** The longest stop string's length in code points (0 with none). */
  readonly longest: number;
  /** Whether a stop string has been generated. */
  stopped: boolean;
  /** The characters held back now: they may still begin a stop string. */
  get pending(): string;
  /** Take one character; return the characters that can no longer be part of a stop string ("" once stopped). */
  feed(char: string): string;
  /** The characters held back, once the text has ended without a stop ("" once it has stopped). */
  flush(): string;
}

/** `chars` up to, not including, the first stop string; each character as soon as it is safe. */
export declare function stoppedStream(chars: Iterable<string>, stops: readonly string[]): Generator<string, void, undefined>;

/** [`text` up to the first stop string (StopMatcher's rule), whether one was found]. */
export declare function cutAtStop(text: string, stops: readonly string[]): [text: string, stopped: boolean];

// --- noise ---------------------------------------------------------------------------------------------

/** A source of noise for generate()/complete(): called in order, each call taking the next values. */
export interface Noise {
  /** The next `count` standard-normal latent noise values (float32). */
  eps(count: number): Float32Array;
  /** The next `count` uniform numbers in [0, 1) (float64). */
  uniform(count: number): Float64Array;
}

/**
 * Noise given as arrays (e.g. a conformance case's): eps float32 [steps x batch x latent], uniform float64
 * [steps x batch], in order.  Throws VrnnError when asked for more than it holds.
 */
export declare class ArrayNoise implements Noise {
  constructor(eps: ArrayLike<number> | Iterable<number>, uniform: ArrayLike<number> | Iterable<number>);
  epsValues: Float32Array;
  uniformValues: Float64Array;
  /** How many eps values have been taken. */
  epsPos: number;
  /** How many uniform values have been taken. */
  uniformPos: number;
  eps(count: number): Float32Array;
  uniform(count: number): Float64Array;
}

/**
 * This runtime's own seeded noise (xoshiro128**): same seed, same text in this runtime (numpy's streams, and
 * so the Python runtime's texts, differ).  A BigInt seed gives the text of the Number of the same value; no
 * seed (null/undefined, or a non-integer) draws fresh entropy.
 */
export declare class SeededNoise implements Noise {
  constructor(seed?: number | bigint | null);
  /** The next uniform number in [0, 1). */
  nextUniform: () => number;
  /** The next standard-normal number (Box-Muller, in pairs). */
  nextNormal: () => number;
  /** The second number of the last Box-Muller pair, not yet taken. */
  spare: number | null;
  eps(count: number): Float32Array;
  uniform(count: number): Float64Array;
}

// --- choosing a character (docs/cell-spec.md section 4) -------------------------------------------------

/** The options that may differ from one sample to the next (each an optional field of SampleOptions). */
export declare const SAMPLE_OPTIONS: readonly ["temperature", "topK", "topP", "greedy", "latentTemperature"];

/** One sample's sampling options; each left out takes its default (or, in perSample, the top-level option). */
export interface SampleOptions {
  /** > 0, default 1; must be 1 with greedy. */
  temperature?: number | undefined;
  /** An integer from 1 to the vocabulary's size, or null (default) for no top-k. */
  topK?: number | null | undefined;
  /** In (0, 1], or null (default) for no top-p; 1 is no top-p. */
  topP?: number | null | undefined;
  /** The most likely character each step (default false); not with topK, topP or a temperature other than 1. */
  greedy?: boolean | undefined;
  /** Scales the latent noise: 0 to MAX_LATENT_TEMPERATURE, default 1. */
  latentTemperature?: number | undefined;
}

/** Whether options filter (section 4): greedy, a top-k, or a top-p below 1. */
export declare function isFiltered(options?: Pick<SampleOptions, "topK" | "topP" | "greedy">): boolean;

/** Greedy: the first index of the largest of logits[offset .. offset + vocab). */
export declare function chooseGreedy(logits: ArrayLike<number>, offset: number, vocab: number): number;

/** The unfiltered choice (section 4.1) from logits[offset .. offset + vocab) with uniform number `u`. */
export declare function chooseUnfiltered(
  logits: ArrayLike<number>,
  offset: number,
  vocab: number,
  u: number,
  temperature?: number,
): number;

/**
 * Top-k and/or top-p (section 4.2) from one row of logits with the step's uniform number `u`; with neither,
 * the unfiltered choice.
 */
export declare function chooseFiltered(
  logits: ArrayLike<number>,
  offset: number,
  vocab: number,
  u: number,
  options?: Pick<SampleOptions, "temperature" | "topK" | "topP">,
): number;

/**
 * Each sample's options as a schema-3 cell's inputs take them: one entry per sample; top_k 0 is no top-k,
 * top_p 1 no top-p, greedy is top_k 1 at temperature 1.
 */
export interface RowOptions {
  temperature: Float64Array;
  topK: BigInt64Array;
  topP: Float64Array;
}

/** Each sample's options (one entry per sample) as a schema-3 cell's inputs take them. */
export declare function rowOptions(samples: readonly SampleOptions[]): RowOptions;

/** How many steps one session run takes for a batch of `batch` samples (1 to MAX_CALL_STEPS). */
export declare function callSteps(batch: number): number;

// --- the cell ------------------------------------------------------------------------------------------

/** A batch's recurrent state: h [layers x batch x hidden_size] and phi_z [batch x embed_size], float32. */
export interface CellState {
  h: Float32Array;
  phiZ: Float32Array;
}

/** One session run's outputs (VrnnCell.steps). */
export interface StepResult {
  /** The picked character ids, [steps x batch]. */
  chars: BigInt64Array;
  /** [steps x batch x vocab_size]. */
  logits: Float32Array;
  state: CellState;
}

/** The options of generate() and complete(); every field is optional. */
export interface GenerateOptions extends SampleOptions {
  /** Characters to generate per sample after the prime: 1 to MAX_LENGTH, default 500. */
  length?: number | undefined;
  /** Text the samples start from (every character in the vocabulary); default "". */
  prime?: string | undefined;
  /** Samples: 1 to MAX_SAMPLES, default 1. */
  batch?: number | undefined;
  /** SeededNoise's seed, 0 to MAX_SEED (a BigInt past 2**53); null (default): fresh entropy. */
  seed?: number | bigint | null | undefined;
  /** The noise to use instead of SeededNoise(seed), e.g. an ArrayNoise. */
  noise?: Noise | null | undefined;
  /**
   * Each session run's characters as the cell picks them (rows[i][b]: sample b's i-th new character), before
   * any stop: refused with `stop`.
   */
  onChars?: ((rows: string[][]) => void) | null | undefined;
  /**
   * Once per session run: pieces[b] is sample b's text released by that run (maybe ""); the pieces join into
   * exactly the text returned (with `stop`, characters that may begin a stop string are held back until they
   * cannot).
   */
  onText?: ((pieces: string[]) => void) | null | undefined;
  /** Steps per session run at most (1 to MAX_CALL_STEPS; smoother streaming); the text is the same. */
  stepsPerCall?: number | null | undefined;
  /**
   * One options object per sample (length === batch); each field an entry leaves out is the top-level
   * option's.  A schema-2 cell refuses different options in one batch.
   */
  perSample?: readonly SampleOptions[] | null | undefined;
  /** A stop string or up to MAX_STOPS of them: each sample's text ends just before the first it generates. */
  stop?: string | readonly string[] | null | undefined;
}

/** Why a sample ended: "stop" (a stop string was generated) or "length" (`length` characters were). */
export type FinishReason = "stop" | "length";

/** One sample of complete(): its new characters (no prime) and why it ended. */
export interface Completion {
  text: string;
  finishReason: FinishReason;
}

/** A vrnn cell loaded in onnxruntime: load() it, then generate() or complete(). */
export declare class VrnnCell {
  /**
   * Load a cell from its bytes with the given onnxruntime module (onnxruntime-node or -web): checks its
   * metadata, its graph's signature and interface, and runs a probe; throws VrnnError for anything else.
   */
  static load(ort: OrtModule, bytes: Uint8Array, sessionOptions?: OrtSessionOptions): Promise<VrnnCell>;

  /** Wrap a session already created (load() checks the cell first; this does not). */
  constructor(
    ort: OrtModule,
    session: OrtSession,
    info: Pick<CellInfo, "config" | "vocab" | "startChar" | "source" | "weights"> & { version?: number },
  );

  ort: OrtModule;
  session: OrtSession;
  config: CellConfig;
  vocab: string[];
  startChar: string;
  source: CellSource;
  weights: WeightFormat;
  /** The cell's schema: 3 takes each row's options, 2 one temperature. */
  version: number;
  /** Each vocabulary character's id. */
  index: Map<string, number>;

  /** Whether the cell applies each sample's own options in-graph (schema 3). */
  get choosesPerRow(): boolean;

  /** The zero state of a batch of `batch` samples. */
  initialState(batch: number): CellState;

  /**
   * One session run: uniform.length / batch steps for `batch` samples from the previous character ids
   * `prev` and `state`.  `rows`: each sample's options (rowOptions), or one temperature for every sample.
   */
  steps(
    prev: ArrayLike<number | bigint>,
    state: CellState,
    eps: Float32Array,
    uniform: Float64Array,
    rows: RowOptions | number,
    batch: number,
  ): Promise<StepResult>;

  /** Two steps of two samples from the zero state; throws VrnnError where the outputs are not as declared. */
  probe(): Promise<void>;

  /** Throws VrnnError for a picked character id outside the vocabulary. */
  checkPick(c: number): void;

  /** One text per sample: the prime followed by the generated characters, cut before the first stop string. */
  generate(options?: GenerateOptions): Promise<string[]>;

  /** generate(), with why each sample ended: one Completion per sample, its text without the prime. */
  complete(options?: GenerateOptions): Promise<Completion[]>;
}
