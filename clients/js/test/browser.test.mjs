// The demo page in a real browser (headless Chromium, driven by puppeteer-core): it loads the bundled cell
// with onnxruntime-web in a Web Worker, streams 300 characters equal to what this module prints in Node for
// the same seed, passes every conformance case, and logs no console error.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import puppeteer from "puppeteer-core";
import { VrnnCell } from "../vrnn.mjs";
import { serve } from "../../web/serve.mjs";

const CHROMIUM = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);
let server, browser, base;
const consoleErrors = [];

before(async () => {
  assert.ok(CHROMIUM, "no Chromium found: install Debian's chromium package or set CHROMIUM");
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

test("the page streams the text this module writes in Node for the same seed", async () => {
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

test("the page passes every conformance case in onnxruntime-web", async () => {
  const page = await open("?conformance=1");
  await page.waitForFunction(() => window.vrnn.conformance !== undefined || window.vrnn.state === "error",
                             { timeout: 120000 });
  const results = await page.evaluate(() => window.vrnn.conformance ?? window.vrnn.error);
  assert.ok(Array.isArray(results), String(results));
  assert.ok(results.length >= 3 * 14); // every case on the float32, float16 and int8 cells
  assert.deepEqual(results.filter((r) => !r.pass), []);
  assert.deepEqual(consoleErrors, []);
});
