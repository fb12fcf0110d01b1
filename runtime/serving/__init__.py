"""vrnn.runtime.serving: `vrnn-serve`, the HTTP service over the sampling runtime.

Continuous batching with no HTTP in it (batcher.py), request bodies checked (request.py for /v1/generate,
openai_request.py for the OpenAI-compatible routes), the ASGI app (server.py), its metrics (metrics.py), the
guards on the HTTP layer under it (http_guard.py) and the command (cli.py).  Only this subpackage needs the
`serve` extra; the sampling runtime around it (vrnn.runtime) never imports it.
"""
