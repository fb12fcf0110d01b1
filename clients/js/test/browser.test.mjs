// The demo page in a real browser (headless Chromium, driven by puppeteer-core): it loads the bundled cell
// (schema 3) with onnxruntime-web in a Web Worker, streams 300 characters with top-p equal to what this module
// prints in Node for the same seed, 8 steps per call, ends the text before the first newline when its stop
// field holds \n, passes every conformance case on every cell (schema 2 included), and logs no console error.
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

/** Click Generate, wait for the end; the text shown and the page's report (window.vrnn). */
async function generateOnPage(page) {
  await page.click("#generate");
  await page.waitForFunction(() => window.vrnn.state === "done", { timeout: 120000 });
  return { shown: await page.$eval("#output", (element) => element.textContent), stats: await page.evaluate(() => window.vrnn) };
}

/** What this module writes in Node with setOptions' settings after `prime` (no stop). */
async function inNode(prime) {
  const bundled = readFileSync(fileURLToPath(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url)));
  const cell = await VrnnCell.load(ort, bundled);
  const [text] = await cell.generate({ length: 300, temperature: 0.8, topP: 0.95, seed: 7, prime });
  return text;
}

/** The page's controls as both page tests set them: temperature 0.8, top-p 0.95, 300 characters, seed 7. */
async function setOptions(page, prime) {
  await page.evaluate((primeText) => {
    const set = (id, value) => { document.getElementById(id).value = value; };
    set("temperature", "0.8"); set("topP", "0.95"); set("latentTemperature", "1"); set("length", "300");
    set("seed", "7"); set("primeText", primeText);
  }, prime);
}

test("the page streams the text this module writes in Node for the same seed", { skip: SKIP }, async () => {
  const page = await open("");
  await page.waitForFunction(() => window.vrnn.state === "ready", { timeout: 60000 });
  assert.equal(await page.evaluate(() => window.vrnn.schemaVersion), 3); // each row's options, in-graph
  await setOptions(page, "ROMEO:");
  const { shown, stats } = await generateOnPage(page);
  const expected = await inNode("ROMEO:");
  assert.equal(stats.text, expected);
  assert.equal(shown, expected); // what streamed onto the page is the whole text
  assert.ok(stats.charsPerSecond > 0 && stats.firstCharMs >= 0);
  assert.equal(stats.calls, Math.ceil(300 / 8)); // the page's 8 steps per call, top-p or not
  if (process.env.VRNN_SCREENSHOT) await page.screenshot({ path: process.env.VRNN_SCREENSHOT, fullPage: true });
  assert.deepEqual(consoleErrors, []);
});

test("the page's stop field ends the text before the first newline when \\n is typed", { skip: SKIP }, async () => {
  const page = await open("");
  await page.waitForFunction(() => window.vrnn.state === "ready", { timeout: 60000 });
  const placeholder = await page.$eval("#stop", (element) => element.placeholder + element.closest("label").textContent);
  assert.match(placeholder, /\\n: newline/); // the field says how to type a newline
  await setOptions(page, "ROMEO: I");
  await page.type("#stop", "\\n"); // typed: a backslash, then n
  assert.equal(await page.$eval("#stop", (element) => element.value), "\\n");
  const { shown, stats } = await generateOnPage(page);
  // The same seed and options without a stop, in Node (the first test shows the page writes the same text).
  const whole = await inNode("ROMEO: I");
  const newline = whole.indexOf("\n");
  assert.ok(newline > "ROMEO: I".length + 8, "the unstopped text has a newline past the first call");
  assert.equal(stats.text, whole.slice(0, newline)); // up to, not including, the first newline
  assert.equal(shown, stats.text); // nothing past it, nor the newline, ever streamed onto the page
  assert.equal(stats.finishReason, "stop");
  assert.equal(stats.calls, Math.ceil((newline - "ROMEO: I".length + 1) / 8)); // it ended early: no more calls
  assert.ok(stats.calls < Math.ceil(300 / 8));
  assert.match(await page.$eval("#status", (element) => element.textContent), /ended at the stop/);
  assert.deepEqual(consoleErrors, []);
});

test("the page passes every conformance case in onnxruntime-web", { skip: SKIP }, async () => {
  const page = await open("?conformance=1");
  await page.waitForFunction(() => window.vrnn.conformance !== undefined || window.vrnn.state === "error",
                             { timeout: 120000 });
  const results = await page.evaluate(() => window.vrnn.conformance ?? window.vrnn.error);
  assert.ok(Array.isArray(results), String(results));
  // Every case on every cell that has an expected text for it (float32, float16, int8 and schema2).
  const cases = JSON.parse(readFileSync(fileURLToPath(new URL("../../../tests/conformance/cases.json",
                                                              import.meta.url)), "utf-8"));
  const expected = cases.cases.flatMap((c) => Object.keys(cases.cells).filter((key) => key in c.expected)
    .map((key) => `${c.name} (${key})`));
  assert.deepEqual(results.map((r) => r.name).sort(), expected.sort());
  assert.ok(results.some((r) => r.schemaVersion === 2) && results.some((r) => r.schemaVersion === 3));
  assert.ok(cases.cases.some((c) => Array.isArray(c.options))); // mixed per-sample options among them
  assert.deepEqual(results.filter((r) => !r.pass), []);
  assert.deepEqual(consoleErrors, []);
});
