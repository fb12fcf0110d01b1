// The package as npm would publish it: `npm pack --dry-run` lists exactly the files a user needs (the module,
// its types, README, LICENSE), package.json names it, versions it and maps its exports onto files it ships,
// onnxruntime-node and -web are optional peers whose tested release is what the tests run on, and the README's
// example runs from the packed files as a user's project would run it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE = fileURLToPath(new URL("../", import.meta.url));
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CELL = join(REPO, "runtime", "bundled-cell", "shakespeare.onnx");
const manifest = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8"));
const PEERS = ["onnxruntime-node", "onnxruntime-web"];
const SHIPPED = ["LICENSE", "README.md", "package.json", "vrnn.d.ts", "vrnn.mjs"];

const [packed] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--loglevel=error"],
                                         { cwd: PACKAGE, encoding: "utf8" }));

/** [major, minor, patch] of "1.2.3" (no pre-release). */
const parts = (version) => {
  assert.match(version, /^\d+\.\d+\.\d+$/, version);
  return version.split(".").map(Number);
};

test("npm pack ships exactly the module, its types, README, LICENSE and package.json", () => {
  assert.deepEqual(packed.files.map((f) => f.path).sort(), SHIPPED);
  assert.equal(packed.name, "vrnn");
  assert.equal(packed.version, manifest.version);
  assert.ok(packed.unpackedSize < 200_000, `${packed.unpackedSize} bytes unpacked`);
  // The licence the package carries is the repository's.
  assert.equal(readFileSync(join(PACKAGE, "LICENSE"), "utf8"), readFileSync(join(REPO, "LICENSE"), "utf8"));
});

test("package.json: publishable, named, versioned, an ES module whose exports map to shipped files", () => {
  assert.equal(manifest.private, undefined);
  assert.equal(manifest.name, "vrnn");
  parts(manifest.version); // a plain version: tests/ compares it with the Python package's
  assert.equal(manifest.license, "MIT");
  assert.equal(typeof manifest.description, "string");
  assert.equal(manifest.type, "module");
  assert.deepEqual(manifest.exports, {
    ".": { types: "./vrnn.d.ts", default: "./vrnn.mjs" },
    "./package.json": "./package.json",
  });
  assert.equal(manifest.main, "./vrnn.mjs");
  assert.equal(manifest.types, "./vrnn.d.ts");
  assert.match(manifest.engines?.node ?? "", /^>=\d+$/);
  assert.ok(Number(process.versions.node.split(".")[0]) >= Number(manifest.engines.node.slice(2)));
  const shipped = new Set(packed.files.map((f) => `./${f.path}`));
  for (const target of [manifest.main, manifest.types, manifest.exports["."].types, manifest.exports["."].default]) {
    assert.ok(shipped.has(target), `${target} is not in the package`);
  }
  // No script runs when a user installs it.
  for (const hook of ["preinstall", "install", "postinstall", "prepare"]) assert.equal(manifest.scripts?.[hook], undefined);
  assert.equal(manifest.dependencies, undefined); // no dependency of its own
});

test("onnxruntime-node and -web: optional peers; the tests run on the tested release, inside the range", () => {
  for (const name of PEERS) {
    const range = manifest.peerDependencies?.[name];
    assert.match(range ?? "", /^\^\d+\.\d+\.\d+$/, `${name}: a caret range`);
    assert.deepEqual(manifest.peerDependenciesMeta?.[name], { optional: true }, name);
    const tested = manifest.devDependencies?.[name];
    const [major, ...low] = parts(range.slice(1));
    const [testedMajor, ...testedRest] = parts(tested);
    assert.equal(testedMajor, major, `${name} ${tested} is outside ${range}`);
    assert.ok(testedRest[0] > low[0] || (testedRest[0] === low[0] && testedRest[1] >= low[1]), `${name} ${tested} < ${range}`);
    // What node_modules holds is that release: the lockfile and package.json agree.
    const installed = JSON.parse(readFileSync(join(PACKAGE, "node_modules", name, "package.json"), "utf8")).version;
    assert.equal(installed, tested, `${name}: node_modules has ${installed}; run npm ci`);
  }
  // onnxruntime-node and -web release together: one tested version for both.
  assert.equal(manifest.devDependencies["onnxruntime-node"], manifest.devDependencies["onnxruntime-web"]);
  assert.equal(manifest.peerDependencies["onnxruntime-node"], manifest.peerDependencies["onnxruntime-web"]);
  const lock = JSON.parse(readFileSync(join(PACKAGE, "package-lock.json"), "utf8"));
  assert.equal(lock.packages[""].version, manifest.version);
  assert.deepEqual(lock.packages[""].peerDependencies, manifest.peerDependencies);
});

test("the package README's example runs from the packed files, as a user's project runs it", () => {
  const readme = readFileSync(join(PACKAGE, "README.md"), "utf8");
  const [, code] = readme.match(/```js\n(.*?)```/s);
  assert.match(code, /from "vrnn";/);
  const dir = mkdtempSync(join(tmpdir(), "vrnn-package-"));
  try {
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
    writeFileSync(join(dir, "example.mjs"), code);
    for (const { path } of packed.files) cpSync(join(PACKAGE, path), join(dir, "node_modules", "vrnn", path));
    mkdirSync(join(dir, "node_modules"), { recursive: true });
    symlinkSync(join(PACKAGE, "node_modules", "onnxruntime-node"), join(dir, "node_modules", "onnxruntime-node"), "dir");
    const printed = execFileSync(process.execPath, ["example.mjs", CELL], { cwd: dir, encoding: "utf8" });
    assert.ok(printed.startsWith("ROMEO:"), printed);
    assert.equal([...printed].length, 306 + 1); // the prime, 300 characters, the newline
    // The module resolves through the package's exports, as "vrnn/package.json" does.
    const version = execFileSync(process.execPath, ["--input-type=module", "-e",
      'import { createRequire } from "node:module"; console.log(createRequire(import.meta.url)("vrnn/package.json").version)'],
    { cwd: dir, encoding: "utf8" });
    assert.equal(version.trim(), manifest.version);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
