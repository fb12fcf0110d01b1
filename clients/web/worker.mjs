// The demo's Web Worker: loads onnxruntime-web (WebAssembly) and a vrnn cell, and streams generated text to
// the page, which therefore never freezes.  Messages in: {type: "load", url}, {type: "generate", options},
// {type: "conformance", cell, cases}.  Messages out: loaded, chars, done, conformance, error.
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

function optionsOf(c) {
  const o = c.options;
  return { temperature: o.temperature ?? 1, topK: o.top_k ?? null, topP: o.top_p ?? null,
           greedy: o.greedy ?? false, latentTemperature: o.latent_temperature ?? 1 };
}

self.onmessage = async ({ data }) => {
  try {
    if (data.type === "load") {
      const result = await loadCell(data.url);
      cell = result.cell;
      self.postMessage({ type: "loaded", seconds: result.seconds, config: cell.config, source: cell.source });
    } else if (data.type === "generate") {
      const started = performance.now();
      let first = null;
      let count = 0;
      const texts = await cell.generate({
        ...data.options,
        stepsPerCall: data.stepsPerCall ?? 8, // small calls stream smoothly; the noise, and so the text, is the same
        onChars: (rows) => {
          first ??= performance.now() - started;
          count += rows.length;
          self.postMessage({ type: "chars", text: rows.map((row) => row[0]).join("") });
        },
      });
      const seconds = (performance.now() - started) / 1000;
      self.postMessage({ type: "done", text: texts[0], chars: count, seconds, firstCharMs: first });
    } else if (data.type === "conformance") {
      const cases = await (await fetch(data.cases)).json();
      const results = [];
      for (const [weights, file] of Object.entries(cases.cells)) { // one cell per weight format
        const { cell: fixtureCell } = await loadCell(new URL(file, data.cases).href);
        for (const c of cases.cases) {
          const texts = await fixtureCell.generate({ ...optionsOf(c), length: c.length, prime: c.prime,
                                                     batch: c.batch, noise: new ArrayNoise(c.eps, c.uniform) });
          const pass = JSON.stringify(texts) === JSON.stringify(c.expected[weights]);
          results.push({ name: `${c.name} (${weights})`, pass });
        }
      }
      self.postMessage({ type: "conformance", results });
    }
  } catch (error) {
    self.postMessage({ type: "error", message: String(error?.message ?? error) });
  }
};
