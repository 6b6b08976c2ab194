"""A Standard Webhooks receiver for the outbound tests, verifying with the independent
`standardwebhooks` package (not Switchyard's code).

Usage: webhook_receiver.py <secrets-file> <log-file> [mode]
  secrets-file: one `whsec_...` per line, re-read on every request (so a test can rotate);
                a delivery is accepted if any listed secret verifies it.
  log-file:     one JSON line per request: {"id", "verified", "status", "type", "data"}.
  mode:         `ok` (default): 204 to every verified delivery; `fail:N`: 500 to the first
                N requests; `retry-after:S`: 503 with Retry-After S to the first request.
Prints `port=<n>` once listening on 127.0.0.1.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secrets_file, log_file = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "ok"
lock = threading.Lock()
seen = {"n": 0}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified, payload = False, None
        with open(secrets_file) as f:
            secrets = [s.strip() for s in f if s.strip()]
        for secret in secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                verified = True
                break
            except WebhookVerificationError:
                continue
        with lock:
            seen["n"] += 1
            n = seen["n"]
        status = 204 if verified else 401
        extra = {}
        if mode.startswith("fail:") and n <= int(mode[5:]):
            status = 500
        if mode.startswith("retry-after:") and n == 1:
            status, extra = 503, {"Retry-After": mode[12:]}
        line = {"id": headers.get("webhook-id"), "verified": verified, "status": status,
                "type": (payload or {}).get("type"), "data": (payload or {}).get("data"),
                "signatures": len(headers.get("webhook-signature", "").split())}
        with lock, open(log_file, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("content-length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port={server.server_address[1]}", flush=True)
server.serve_forever()
