// Stop sequences in this module (StopMatcher, cutAtStop, generate's and complete's `stop`), by the rule of
// vrnn.runtime.stops and tests/test_stops.py: a text ends just before the first stop string it generates, the
// stop string is not in it, the prime is not searched, and a stopped text is a prefix of the same seed's text
// without `stop`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import {
  MAX_STOP_CHARS, MAX_STOPS, StopMatcher, VrnnCell, VrnnError, checkStops, cutAtStop, stoppedStream,
} from "../vrnn.mjs";

const bundled = readFileSync(fileURLToPath(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url)));
const cell = await VrnnCell.load(ort, bundled);

/** Count a cell's session runs from now on (as conformance.test.mjs does); `restore()` puts the session back. */
function countRuns(target) {
  const calls = [];
  const original = target.session;
  const runSession = original.run.bind(original);
  target.session = { ...original, run: (feeds) => {
    calls.push(feeds.eps.dims[0]);
    return runSession(feeds);
  } };
  Object.defineProperty(calls, "restore", { value: () => { target.session = original; } }); // not enumerable
  return calls;
}

// tests/test_stops.py::test_cut_at_stop, case for case.
const CASES = [
  ["hello world", ["o"], "hell", true],
  ["hello world", ["world", "lo w"], "hel", true], // "lo w" ends first
  ["xabc", ["abc", "b"], "xa", true], // "b" is generated whole before "abc" is
  ["xabc", ["bc", "abc"], "x", true], // both end at c: before the earlier start
  ["aaab", ["aab"], "a", true], // a partial match that fails, then one that does not
  ["hello", ["xyz"], "hello", false],
  ["hell", ["hello"], "hell", false], // held back while it could begin a stop, then flushed
  ["\n\nROMEO", ["\n\n"], "", true],
];

test("cutAtStop and stoppedStream cut where the Python runtime does", () => {
  for (const [text, stops, expected, stopped] of CASES) {
    const name = JSON.stringify([text, stops]);
    assert.deepEqual(cutAtStop(text, stops), [expected, stopped], name);
    assert.equal([...stoppedStream(text, stops)].join(""), expected, name);
  }
  assert.equal([...stoppedStream("abc", [])].join(""), "abc"); // no stops: everything
});

/** A seeded generator of small integers (mulberry32), so that a failure can be replayed. */
function random(seed) {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
}

/** The rule written out directly: the earliest end of any stop string, then the earliest start ending there. */
function reference(text, stops) {
  for (let end = 1; end <= text.length; end++) {
    const starts = stops.filter((s) => text.slice(0, end).endsWith(s)).map((s) => end - s.length);
    if (starts.length > 0) return [text.slice(0, Math.min(...starts)), true];
  }
  return [text, false];
}

test("on random strings a stopped text is a prefix holding no stop string, ending just before one", () => {
  const next = random(40);
  const word = (min, max) => Array.from({ length: min + next(max - min + 1) }, () => "ab\n"[next(3)]).join("");
  for (let trial = 0; trial < 3000; trial++) {
    const text = word(0, 40);
    const stops = Array.from({ length: 1 + next(4) }, () => word(1, 4));
    const name = JSON.stringify([text, stops]);
    const [cut, stopped] = cutAtStop(text, stops);
    assert.ok(text.startsWith(cut), name);
    assert.ok(!stops.some((s) => cut.includes(s)), name);
    if (stopped) assert.ok(stops.some((s) => text.slice(cut.length).startsWith(s)), name);
    else assert.equal(cut, text, name);
    assert.deepEqual([cut, stopped], reference(text, stops), name);
    // Streamed: what has come out is always a prefix of the cut, and it all comes out in the end.
    const matcher = new StopMatcher(stops);
    let out = "";
    for (const char of text) {
      out += matcher.feed(char);
      assert.ok(cut.startsWith(out), name);
      if (matcher.stopped) break;
    }
    assert.equal(out + matcher.flush(), cut, name);
    assert.equal(matcher.stopped, stopped, name);
  }
});

test("the matcher releases characters as soon as they cannot begin a stop", () => {
  const matcher = new StopMatcher(["END"]);
  assert.deepEqual([..."xEyE"].map((c) => matcher.feed(c)), ["x", "", "Ey", ""]);
  assert.equal(matcher.pending, "E");
  assert.equal(matcher.flush(), "E");
  const stopped = new StopMatcher(["ab"]);
  assert.deepEqual([..."xabc"].map((c) => stopped.feed(c)), ["x", "", "", ""]);
  assert.ok(stopped.stopped);
  assert.equal(stopped.flush(), ""); // after a stop nothing more is text
});

test("a character outside the BMP is one character, as in Python", () => {
  assert.deepEqual(cutAtStop("a\u{1F600}b\u{1F600}c", ["b\u{1F600}"]), ["a\u{1F600}", true]);
  assert.deepEqual(checkStops("\u{1F600}".repeat(MAX_STOP_CHARS)), ["\u{1F600}".repeat(MAX_STOP_CHARS)]);
  assert.throws(() => checkStops("\u{1F600}".repeat(MAX_STOP_CHARS + 1)), /got 257$/);
});

test("bad stops are refused in one line naming stop, before any work", async () => {
  assert.deepEqual(checkStops(null), []);
  assert.deepEqual(checkStops(undefined), []);
  assert.deepEqual(checkStops("\n"), ["\n"]); // a single string
  assert.deepEqual(checkStops(["a", "b", "c", "d"]), ["a", "b", "c", "d"]);
  const refused = [
    [["a", "b", "c", "d", "e"], `stop may hold at most ${MAX_STOPS} strings, got 5`],
    [[""], `each stop string must be 1 to ${MAX_STOP_CHARS} characters, got 0`],
    [[""], /1 to 256/],
    ["", /1 to 256/],
    [["x".repeat(257)], /1 to 256/],
    [[1], "stop must be a string or an array of strings"],
    [3, /string/],
    [{ 0: "a" }, /string/],
    [["a", null], /string/],
  ];
  const calls = countRuns(cell);
  try {
    for (const [stop, says] of refused) {
      const check = (error) => error instanceof VrnnError && !error.message.includes("\n") &&
        /\bstop\b/.test(error.message) && (typeof says === "string" ? error.message === says : says.test(error.message));
      assert.throws(() => checkStops(stop), check, JSON.stringify(stop));
      await assert.rejects(cell.generate({ length: 5, seed: 1, stop }), check, JSON.stringify(stop));
      await assert.rejects(cell.complete({ length: 5, seed: 1, stop }), check, JSON.stringify(stop));
    }
    // onChars streams the characters before any cut: with a stop it is refused (onText streams the cut text).
    await assert.rejects(cell.generate({ length: 5, stop: "a", onChars: () => {} }), /with stop, stream with onText/);
  } finally {
    calls.restore();
  }
  assert.equal(calls.length, 0);
});

const OPTIONS = [{}, { temperature: 0.7 }, { topP: 0.9 }, { topK: 5 }, { greedy: true }];

test("a stopped text is a prefix of the unstopped one, with every option, streamed or not", async () => {
  const prime = "ROMEO:";
  const length = 300; // two calls: a stop in either
  let stoppedSome = 0;
  let ranOut = 0;
  for (const options of OPTIONS) {
    for (const seed of [0, 1]) {
      const [whole] = await cell.generate({ length, prime, seed, ...options });
      const [unstopped] = await cell.complete({ length, prime, seed, ...options });
      assert.deepEqual(unstopped, { text: whole.slice(prime.length), finishReason: "length" });
      for (const stop of [["\n\n"], [":", "e"], ["ROMEO"], "zzz"]) { // a single string too
        const name = JSON.stringify({ options, seed, stop });
        const streamed = [];
        const [completion] = await cell.complete({ length, prime, seed, stop, ...options,
                                                   onText: (pieces) => streamed.push(pieces[0]) });
        const [expected, wasStopped] = cutAtStop(whole.slice(prime.length), typeof stop === "string" ? [stop] : stop);
        assert.equal(completion.text, expected, name); // the prime is not searched: "ROMEO" is in it
        assert.equal(completion.finishReason, wasStopped ? "stop" : "length", name);
        assert.equal(streamed.join(""), completion.text, name);
        let shown = "";
        for (const piece of streamed) { // at no point does a stream show what the text will not hold
          shown += piece;
          assert.ok(completion.text.startsWith(shown), name);
        }
        if (wasStopped) stoppedSome += 1;
        else ranOut += 1;
      }
      // generate returns the prime and the same cut text
      assert.deepEqual(await cell.generate({ length, prime, seed, stop: "\n", ...options }),
                       [prime + cutAtStop(whole.slice(prime.length), ["\n"])[0]]);
    }
  }
  assert.ok(stoppedSome > 0 && ranOut > 0); // both ends are exercised
});

test("streaming holds back what may begin a stop, then releases it", async () => {
  // Without stop, onText gives each call's characters; with a stop that never completes, the same text in the
  // end, but a character that begins the stop waits until the next one shows it does not go on to complete it.
  const [whole] = await cell.generate({ length: 64, seed: 4 });
  const plain = [];
  await cell.generate({ length: 64, seed: 4, stepsPerCall: 1, onText: (p) => plain.push(p[0]) });
  assert.deepEqual(plain, [...whole]);
  assert.ok(whole.startsWith("\nC")); // this seed's text begins with a newline, then a C
  const held = [];
  const [completion] = await cell.complete({ length: 64, seed: 4, stepsPerCall: 1, stop: ["\n\n", "CAPULET!"],
                                             onText: (p) => held.push(p[0]) });
  assert.deepEqual(completion, { text: whole, finishReason: "length" }); // neither is ever generated whole
  assert.equal(held.length, 64); // once per call, held back or not
  // "\n" may begin "\n\n": held; then "C" may begin "CAPULET!" and "\n" no longer begins anything: released.
  assert.deepEqual(held.slice(0, 2), ["", "\n"]);
  assert.deepEqual(held.slice(2, 8), new Array(6).fill("")); // "CAPULET" is held whole ...
  assert.equal(held[8], "CAPULET:"); // ... until ":" shows that it does not go on to "CAPULET!"
  assert.equal(held.join(""), whole);
});

test("each sample of a batch stops on its own, and the batch ends once all have", async () => {
  const alone = await cell.generate({ length: 300, seed: 11, batch: 5 });
  const completions = await cell.complete({ length: 300, seed: 11, batch: 5, stop: ["\n"] });
  alone.forEach((text, b) => {
    assert.deepEqual([completions[b].text, completions[b].finishReason === "stop"], cutAtStop(text, ["\n"]), `sample ${b}`);
  });
  const lengths = new Set(completions.map((c) => c.text.length));
  assert.ok(lengths.size > 1); // they stopped at different places
  // Mixed options per sample stop on their own too: each is the prefix of its own unstopped text.
  const perSample = [{ greedy: true }, { topP: 0.8 }, { temperature: 0.5 }];
  const mixedWhole = await cell.generate({ length: 200, seed: 2, batch: 3, perSample });
  const mixed = await cell.generate({ length: 200, seed: 2, batch: 3, perSample, stop: "e" });
  mixed.forEach((text, b) => assert.equal(text, cutAtStop(mixedWhole[b], ["e"])[0], `perSample ${b}`));

  // Every sample stops within a few characters: the first call of 256 steps holds every stop, no second one.
  const calls = countRuns(cell);
  let stopped;
  try {
    stopped = await cell.complete({ length: 5000, seed: 11, batch: 5, stop: ["e"] });
  } finally {
    calls.restore();
  }
  assert.ok(stopped.every((c) => c.finishReason === "stop"));
  assert.deepEqual(calls, [256]);
  // Smaller calls: the run ends with the call in which the last sample stops.
  const streamedCalls = countRuns(cell);
  const pieces = [];
  let small;
  try {
    small = await cell.complete({ length: 5000, seed: 11, batch: 5, stop: ["e"], stepsPerCall: 4,
                                  onText: (p) => pieces.push(p) });
  } finally {
    streamedCalls.restore();
  }
  assert.deepEqual(small, stopped); // the same texts, whatever the call size
  const lastStop = Math.max(...(await cell.generate({ length: 256, seed: 11, batch: 5 })).map((t) => t.indexOf("e")));
  assert.equal(streamedCalls.length, Math.ceil((lastStop + 1) / 4));
  assert.equal(pieces.length, streamedCalls.length);
  for (let b = 0; b < 5; b++) assert.equal(pieces.map((p) => p[b]).join(""), small[b].text);
  // Samples that never stop keep the batch running to the end; the others' texts are cut all the same.
  const whole = await cell.generate({ length: 600, seed: 11, batch: 5 });
  const runs = countRuns(cell);
  let partly;
  try {
    partly = await cell.complete({ length: 600, seed: 11, batch: 5, stop: "?" });
  } finally {
    runs.restore();
  }
  assert.deepEqual(partly.map((c) => c.finishReason), ["stop", "stop", "length", "length", "stop"]);
  partly.forEach((c, b) => assert.equal(c.text, cutAtStop(whole[b], ["?"])[0], `sample ${b}`));
  assert.deepEqual(runs, [256, 256, 88]);
});
