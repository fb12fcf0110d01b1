// Timing of the JavaScript runtime, for benchmarks/bench_js.py (which compares it with vrnn-run).
//   node bench.mjs node CELL LENGTH     -> {"load_s", "chars_per_s"} with onnxruntime-node, batch 1
//   node bench.mjs browser CELL LENGTH  -> {"load_s", "chars_per_s", "first_char_ms"} in headless Chromium
// Unfiltered sampling at temperature 1, the cell's own pick: the same work as `vrnn-run -n LENGTH`.
import { existsSync, readFileSync } from "node:fs";
import { relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const [mode, cellPath, lengthText] = process.argv.slice(2);
const length = Number(lengthText ?? 20000);

if (mode === "node") {
  const ort = await import("onnxruntime-node");
  const { VrnnCell } = await import("./vrnn.mjs");
  let started = performance.now();
  const cell = await VrnnCell.load(ort, readFileSync(cellPath), { intraOpNumThreads: 1 });
  const load = (performance.now() - started) / 1000;
  await cell.generate({ length: 256, seed: 0 }); // warm-up
  started = performance.now();
  await cell.generate({ length, seed: 1 });
  const seconds = (performance.now() - started) / 1000;
  console.log(JSON.stringify({ load_s: load, chars_per_s: length / seconds }));
} else if (mode === "browser") {
  const { default: puppeteer } = await import("puppeteer-core");
  const { serve, ROOT } = await import("../web/serve.mjs");
  const chromium = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);
  const cell = relative(ROOT, resolve(cellPath));
  const server = await serve(0, { files: [cell] }); // the server serves only what the page needs, and this cell
  const browser = await puppeteer.launch({ executablePath: chromium, headless: true,
                                           args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/clients/web/?steps=256&cell=${encodeURIComponent("/" + cell)}`);
    await page.waitForFunction(() => window.vrnn.state === "ready", { timeout: 120000 });
    const run = async (n) => {
      await page.evaluate((n) => {
        for (const [id, value] of [["temperature", "1"], ["topP", ""], ["latentTemperature", "1"], ["length", String(n)],
                                   ["seed", "1"], ["primeText", ""]]) document.getElementById(id).value = value;
        document.getElementById("generate").click();
      }, n);
      await page.waitForFunction(() => window.vrnn.state === "done", { timeout: 600000 });
      return page.evaluate(() => ({ ...window.vrnn }));
    };
    await run(256); // warm-up
    const stats = await run(length);
    const loadS = await page.evaluate(() => window.vrnn.loadSeconds);
    console.log(JSON.stringify({ load_s: loadS, chars_per_s: stats.charsPerSecond, first_char_ms: stats.firstCharMs }));
  } finally {
    await browser.close();
    server.close();
  }
} else {
  console.error("usage: node bench.mjs node|browser CELL [LENGTH]");
  process.exit(2);
}
