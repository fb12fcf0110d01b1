// A static file server for the demo page and its tests, on 127.0.0.1: what the page fetches and nothing else
// (no .git, no checkpoints), with the MIME types that module workers and WebAssembly need.
// `node clients/web/serve.mjs [port]` (make web) serves it by hand.
import { createServer } from "node:http";
import { readFile, realpath, stat } from "node:fs/promises";
import { extname, join, posix, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(fileURLToPath(new URL("../../", import.meta.url)));
// Relative to the root: the page, the runtime module, onnxruntime-web, the bundled cell, and the conformance
// fixtures (index.html?conformance=1).  A trailing slash serves a folder's files.
const SERVED = ["clients/web/", "clients/js/vrnn.mjs", "clients/js/node_modules/onnxruntime-web/dist/",
                "runtime/bundled-cell/shakespeare.onnx", "tests/conformance/"];
const TYPES = { ".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript",
                ".wasm": "application/wasm", ".json": "application/json", ".onnx": "application/octet-stream",
                ".png": "image/png" };

class Refusal extends Error {
  constructor(status) {
    super(String(status));
    this.status = status;
  }
}

/** The real path of the file a request target names, if it is one the page may fetch; else a Refusal. */
async function locate(target, root, served) {
  if (!target.startsWith("/")) throw new Refusal(400); // absolute-form (a proxy's request) or "*"
  let path;
  try {
    path = decodeURIComponent(target.split("?")[0]);
  } catch {
    throw new Refusal(400); // malformed percent-encoding
  }
  if (path.includes("\0")) throw new Refusal(400);
  path = posix.normalize(path).slice(1);
  if (path === "" || path.endsWith("/")) path += "index.html";
  const entry = served.find((s) => (s.endsWith("/") ? path.startsWith(s) : path === s));
  if (!entry) throw new Refusal(404);
  // Symlinks are followed only where they stay inside the entry: realpath, then containment.
  const allowed = join(await realpath(root), entry);
  let real;
  try {
    real = await realpath(join(root, path));
  } catch {
    throw new Refusal(404);
  }
  const inside = entry.endsWith("/") ? real.startsWith(allowed) : real === allowed;
  if (!inside || !(await stat(real)).isFile()) throw new Refusal(404); // a FIFO or device would never end
  return real;
}

/**
 * Start serving on 127.0.0.1 (port 0: any free port); resolves to the listening http.Server, rejects if it
 * cannot listen.  `root` is the repository; `files` adds files under it (a cell to benchmark, say).
 */
export function serve(port = 0, { root = ROOT, files = [] } = {}) {
  const served = [...SERVED, ...files];
  const server = createServer(async (request, response) => {
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    try {
      const file = await locate(request.url, root, served);
      const body = await readFile(file);
      response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream",
                                "content-length": body.length });
      response.end(request.method === "HEAD" ? undefined : body);
    } catch (error) {
      const status = error instanceof Refusal ? error.status : 500;
      response.writeHead(status, { "content-type": "text/plain" }).end(status === 404 ? "not found\n" : "");
    }
  });
  return new Promise((done, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", fail);
      done(server);
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const fail = (message, status) => {
    console.error(`serve.mjs: ${message}`);
    process.exit(status);
  };
  const [text = "8000", ...extra] = process.argv.slice(2);
  if (extra.length) fail("usage: node clients/web/serve.mjs [port]", 2);
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) {
    fail(`port must be an integer from 0 to 65535, got ${JSON.stringify(text)}`, 2);
  }
  let server;
  try {
    server = await serve(port);
  } catch (error) {
    const why = error.code === "EADDRINUSE" ? "the port is in use" : error.message;
    fail(`cannot listen on 127.0.0.1:${port}: ${why}`, 1);
  }
  console.log(`serving the demo at http://127.0.0.1:${server.address().port}/clients/web/`);
}
