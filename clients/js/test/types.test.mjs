// The TypeScript declarations (vrnn.d.ts): the typed example (examples/typed.ts) type-checks without an error
// under tsconfig.json (strict, exact optional properties, unchecked index access), importing "vrnn" as a user's
// project does; it imports every name vrnn.mjs exports, and vrnn.d.ts declares exactly those names, each with
// a type its value has.  Then the example, compiled, runs on the bundled cell from the files `npm pack` ships.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as vrnn from "../vrnn.mjs";

const PACKAGE = fileURLToPath(new URL("../", import.meta.url));
const TSC = join(PACKAGE, "node_modules", ".bin", "tsc");
const CELL = fileURLToPath(new URL("../../../runtime/bundled-cell/shakespeare.onnx", import.meta.url));
const declarations = readFileSync(join(PACKAGE, "vrnn.d.ts"), "utf8");
const example = readFileSync(join(PACKAGE, "examples", "typed.ts"), "utf8");
const exported = Object.keys(vrnn).sort();

/** tsc with these arguments in the package's folder: its status and everything it printed. */
function tsc(...args) {
  const run = spawnSync(process.execPath, [TSC, ...args], { cwd: PACKAGE, encoding: "utf8" });
  if (run.error) throw run.error;
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

/** The values vrnn.d.ts declares: name -> [kind, declared type (constants only)]. */
function declaredValues() {
  const values = new Map();
  for (const [, kind, name, type] of declarations.matchAll(/^export declare (const|function|class) (\w+)(?::\s*([^;]+);)?/gm)) {
    assert.ok(!values.has(name), `vrnn.d.ts declares ${name} twice`);
    values.set(name, [kind, type?.trim()]);
  }
  return values;
}

test("the typed example type-checks against vrnn.d.ts with no error (tsc --noEmit, strict)", () => {
  const { status, output } = tsc("--noEmit", "-p", "tsconfig.json");
  assert.equal(output.trim(), "", output);
  assert.equal(status, 0);
});

test("the type check is real: a wrong use of the declarations fails it", () => {
  // A scratch project beside the example: the same options, one file that misuses generate()'s options.
  const dir = mkdtempSync(join(PACKAGE, ".types-"));
  try {
    writeFileSync(join(dir, "wrong.ts"), 'import { VrnnCell } from "vrnn";\n' +
                  "export const f = (cell: VrnnCell) => cell.generate({ topK: \"5\" });\n");
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ extends: "../tsconfig.json", include: ["wrong.ts"] }));
    const { status, output } = tsc("--noEmit", "-p", join(dir, "tsconfig.json"));
    assert.notEqual(status, 0);
    assert.match(output, /wrong\.ts.*error TS2322/s);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("vrnn.d.ts declares exactly the names vrnn.mjs exports, each with its value's kind and type", () => {
  const values = declaredValues();
  assert.deepEqual([...values.keys()].sort(), exported);
  for (const [name, [kind, type]] of values) {
    const value = vrnn[name];
    if (kind === "function") assert.equal(typeof value, "function", name);
    else if (kind === "class") assert.match(Function.prototype.toString.call(value), /^class\b/, name);
    else if (type === "number" || type === "bigint") assert.equal(typeof value, type, name);
    else if (type.startsWith("readonly [")) assert.deepEqual(value, JSON.parse(type.slice("readonly ".length)), name);
    else assert.equal(value, JSON.parse(type), name); // a literal type: the value itself
  }
});

test("the typed example imports every exported name (and tsc checks each is declared)", () => {
  const imports = example.match(/^import \{([^}]*)\} from "vrnn";/m);
  assert.ok(imports, 'examples/typed.ts has no `import { ... } from "vrnn"`');
  const names = imports[1].split(",").map((s) => s.trim()).filter(Boolean);
  assert.deepEqual([...names].sort(), exported);
  for (const name of names) {
    const uses = example.split(new RegExp(`\\b${name}\\b`)).length - 1;
    assert.ok(uses >= 2, `examples/typed.ts imports ${name} but does not use it`);
  }
});

test("the typed example, compiled, runs on the bundled cell from the files the package ships", () => {
  const dir = mkdtempSync(join(tmpdir(), "vrnn-typed-"));
  try {
    const { status, output } = tsc("-p", "tsconfig.json", "--noEmit", "false", "--outDir", join(dir, "out"));
    assert.equal(status, 0, output);
    // A user's project: the packed files as node_modules/vrnn, and onnxruntime-node beside it.
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
    const [{ files }] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--loglevel=error"],
                                                { cwd: PACKAGE, encoding: "utf8" }));
    const installed = join(dir, "node_modules", "vrnn");
    for (const { path } of files) cpSync(join(PACKAGE, path), join(installed, path));
    mkdirSync(join(dir, "node_modules"), { recursive: true });
    symlinkSync(join(PACKAGE, "node_modules", "onnxruntime-node"), join(dir, "node_modules", "onnxruntime-node"), "dir");
    const printed = execFileSync(process.execPath, [join(dir, "out", "examples", "typed.js"), CELL],
                                 { cwd: dir, encoding: "utf8" });
    assert.match(printed, /schema 3, float32 weights/);
    assert.match(printed, /^refused: temperature must be a finite number > 0$/m);
    assert.match(printed, /onnxruntime-web fits true/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
