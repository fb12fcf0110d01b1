// The demo's Web Worker: loads onnxruntime-web (WebAssembly) and a vrnn cell, and streams generated text to
// the page, which therefore never freezes.  Messages in: {type: "load", url}, {type: "generate", options,
// stepsPerCall} (options.stop: stop strings, as VrnnCell.complete takes them), {type: "conformance", cases}.
// Messages out: loaded, chars, done (with finishReason "stop" or "length"), conformance, error.
// A schema-3 cell (the bundled one) runs every option, top-p included, stepsPerCall steps per call.
import * as ort from "../js/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { ArrayNoise, VrnnCell } from "../js/vrnn.mjs";

ort.env.wasm.wasmPaths = new URL("../js/node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give

let cell = null;

async function loadCell(url) {
  const started = performance.now();
  const response = await fetch(url);
  if (!response.ok) throw new Error(`could not fetch ${url}: ${response.status}`);
  const loaded = await VrnnCell.load(ort, new Uint8Array(await response.arrayBuffer()));
  return { cell: loaded, seconds: (performance.now() - started) / 1000 };
}

// A case's options (snake_case, as tests/conformance/make_fixtures.py writes them): one set for every sample,
// or a list of one per sample (perSample).
function optionsOf(c) {
  const one = (o) => ({ temperature: o.temperature ?? 1, topK: o.top_k ?? null,
                        topP: o.top_p ?? null, greedy: o.greedy ?? false, latentTemperature: o.latent_temperature ?? 1 });
  return Array.isArray(c.options) ? { perSample: c.options.map(one) } : one(c.options);
}

self.onmessage = async ({ data }) => {
  try {
    if (data.type === "load") {
      const result = await loadCell(data.url);
      cell = result.cell;
      self.postMessage({ type: "loaded", seconds: result.seconds, config: cell.config, source: cell.source,
                         schemaVersion: cell.version });
    } else if (data.type === "generate") {
      const started = performance.now();
      let first = null;
      let count = 0;
      let calls = 0; // onText comes once per session run: top-p no longer forces one step per call
      // complete(): the new characters, cut before the first stop string (options.stop), and why they ended.
      // onText streams them with the characters that may begin a stop string held back until they cannot.
      const [completion] = await cell.complete({
        ...data.options,
        stepsPerCall: data.stepsPerCall ?? 8, // small calls stream smoothly; the noise, and so the text, is the same
        onText: ([text]) => {
          calls += 1;
          if (text === "") return; // held back: it may begin a stop string
          first ??= performance.now() - started;
          count += [...text].length;
          self.postMessage({ type: "chars", text });
        },
      });
      const seconds = (performance.now() - started) / 1000;
      self.postMessage({ type: "done", text: (data.options.prime ?? "") + completion.text, chars: count, calls, seconds,
                         firstCharMs: first ?? seconds * 1000, finishReason: completion.finishReason });
    } else if (data.type === "conformance") {
      const cases = await (await fetch(data.cases)).json();
      const results = [];
      // Every case on every cell with an expected text for it: the schema-3 cells (float32, float16, int8) and
      // the schema-2 one (schema2), which takes one set of options for a batch and so has no mixed cases.
      for (const [key, file] of Object.entries(cases.cells)) {
        const { cell: fixtureCell } = await loadCell(new URL(file, data.cases).href);
        for (const c of cases.cases) {
          if (!(key in c.expected)) continue;
          const texts = await fixtureCell.generate({ ...optionsOf(c), length: c.length,
                                                     prime: c.prime, batch: c.batch,
                                                     noise: new ArrayNoise(c.eps, c.uniform) });
          const pass = JSON.stringify(texts) === JSON.stringify(c.expected[key]);
          results.push({ name: `${c.name} (${key})`, pass, schemaVersion: fixtureCell.version });
        }
      }
      self.postMessage({ type: "conformance", results });
    }
  } catch (error) {
    self.postMessage({ type: "error", message: String(error?.message ?? error) });
  }
};
