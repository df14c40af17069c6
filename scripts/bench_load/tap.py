"""The database side of the bench: a write tap between the consumers and
VictoriaMetrics. It forwards every request, counts the score points each
accepted write carries and, in latency phases, notes when the database
acknowledged each point's timestamp."""

import gzip
import http.client
import http.server
import threading
import time
import urllib.parse

from bench_load.common import SCORE_MEASUREMENT


class TapState:
    """What the tap saw in the current phase (guarded by `lock`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset(False)

    def reset(self, keep_ts):
        with self.lock:
            self.keep_ts = keep_ts
            self.points = 0
            self.first_ack = None
            self.last_ack = None
            self.requests = 0
            self.failed = 0
            # (ack time, [ts_ns, ...]) per accepted write, latency phases only.
            self.acks = []
            # Seconds the database took to answer each write.
            self.db_s = []

    def snapshot(self):
        with self.lock:
            return self.points, self.last_ack


def score_timestamps(body, precision):
    scale = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9}.get(precision, 1)
    out = []
    for line in body.split(b"\n"):
        if line.startswith(SCORE_MEASUREMENT + b","):
            out.append(int(line.rsplit(b" ", 1)[1]) * scale)
    return out


def make_tap(upstream_port, state):
    local = threading.local()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def upstream(self):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                local.conn = conn
            return conn

        def forward(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "connection", "content-length")
            }
            try:
                conn = self.upstream()
                sent = time.time()
                conn.request(method, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                local.conn = None
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            acked = time.time()
            if method == "POST" and "/write" in self.path:
                self.note(body, acked, 200 <= resp.status < 300, acked - sent)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "content-length", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def note(self, body, acked, ok, db_s):
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            n = body.count(b"\n" + SCORE_MEASUREMENT + b",") + int(
                body.startswith(SCORE_MEASUREMENT + b",")
            )
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            precision = query.get("precision", ["ns"])[0]
            with state.lock:
                state.requests += 1
                state.db_s.append(db_s)
                if not ok:
                    state.failed += 1
                    return
                state.points += n
                if n and state.first_ack is None:
                    state.first_ack = acked
                if n:
                    state.last_ack = acked
                keep = state.keep_ts
            if keep and n:
                stamps = score_timestamps(body, precision)
                with state.lock:
                    state.acks.append((acked, stamps))

        def do_POST(self):
            self.forward("POST")

        def do_GET(self):
            self.forward("GET")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
