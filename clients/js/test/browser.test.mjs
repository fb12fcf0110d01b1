// The demo page in a real browser (headless Chromium, driven by puppeteer-core): it loads the bundled cell
// with onnxruntime-web in a Web Worker, streams 300 characters equal to what this module prints in Node for
// the same seed, passes every conformance case, and logs no console error.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import puppeteer from "puppeteer-core";
import { VrnnCell } from "../vrnn.mjs";
import { serve } from "../../web/serve.mjs";

// The browser: $CHROMIUM if set, else the first of these names on PATH.  Without one the tests are skipped,
// unless $VRNN_REQUIRE_BROWSER is 1 (.ci/run sets it): then they fail, so CI never passes without them.
const BROWSER_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    return existsSync(path);
  } catch {
    return false;
  }
}

function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  for (const name of BROWSER_NAMES) {
    const found = dirs.map((dir) => join(dir, name)).find(executable);
    if (found) return found;
  }
  return undefined;
}

const CHROMIUM = findChromium();
const REQUIRED = process.env.VRNN_REQUIRE_BROWSER === "1";
const SKIP = CHROMIUM || REQUIRED ? false : `no Chromium on PATH (${BROWSER_NAMES.join(", ")}) and no $CHROMIUM`;
let server, browser, base;
const consoleErrors = [];

before(async () => {
  if (SKIP) return;
  assert.ok(CHROMIUM, "no Chromium found on PATH or in $CHROMIUM, and $VRNN_REQUIRE_BROWSER=1 requires one");
  assert.ok(executable(CHROMIUM), `$CHROMIUM is not an executable file: ${CHROMIUM}`);
  server = await serve(0);
  base = `http://127.0.0.1:${server.address().port}/clients/web/`;
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true,
                                     args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function open(query) {
  const page = await browser.newPage();
  page.on("console", (message) => message.type() === "error" && consoleErrors.push(message.text()));
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(base + query);
  return page;
}

test("the page streams the text this module writes in Node for the same seed", { skip: SKIP }, async () => {
  const page = await open("");
  await page.waitForFunction(() => window.vrnn.state === "ready", { timeout: 60000 });
  await page.evaluate(() => {
    const set = (id, value) => { document.getElementById(id).value = value; };
    set("temperature", "0.8"); set("topP", "0.95"); set("latentTemperature", "1"); set("length", "300");
    set("seed", "7"); set("primeText", "ROMEO:");
  });
  await page.click("#generate");
  await page.waitForFunction(() => window.vrnn.state === "done", { timeout: 120000 });
  const shown = await page.$eval("#output", (element) => element.textContent);
  const stats = await page.evaluate(() => window.vrnn);
  const bundled = readFileSync(fileURLToPath(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url)));
  const cell = await VrnnCell.load(ort, bundled);
  const [expected] = await cell.generate({ length: 300, temperature: 0.8, topP: 0.95, seed: 7, prime: "ROMEO:" });
  assert.equal(stats.text, expected);
  assert.equal(shown, expected); // what streamed onto the page is the whole text
  assert.ok(stats.charsPerSecond > 0 && stats.firstCharMs >= 0);
  if (process.env.VRNN_SCREENSHOT) await page.screenshot({ path: process.env.VRNN_SCREENSHOT, fullPage: true });
  assert.deepEqual(consoleErrors, []);
});

test("the page passes every conformance case in onnxruntime-web", { skip: SKIP }, async () => {
  const page = await open("?conformance=1");
  await page.waitForFunction(() => window.vrnn.conformance !== undefined || window.vrnn.state === "error",
                             { timeout: 120000 });
  const results = await page.evaluate(() => window.vrnn.conformance ?? window.vrnn.error);
  assert.ok(Array.isArray(results), String(results));
  assert.ok(results.length >= 3 * 14); // every case on the float32, float16 and int8 cells
  assert.deepEqual(results.filter((r) => !r.pass), []);
  assert.deepEqual(consoleErrors, []);
});
