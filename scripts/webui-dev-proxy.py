#!/usr/bin/env python3
"""Serves the dashboard from webui/static/ on disk and forwards every other request to a
running jobmanager's REST port, so dashboard changes show after a browser reload without
rebuilding the jobmanager (which embeds the files).

    scripts/webui-dev-proxy.py --rest 127.0.0.1:8081 --port 8090

Then open http://127.0.0.1:8090/. Only files that exist under webui/static/ are served from
disk; paths are resolved inside that directory.
"""
import argparse
import http.client
import http.server
import mimetypes
import os

STATIC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "webui", "static"))


def handler(rest_host, rest_port):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _static(self):
            path = self.path.split("?", 1)[0].lstrip("/") or "index.html"
            full = os.path.normpath(os.path.join(STATIC, path))
            if not full.startswith(STATIC + os.sep) or not os.path.isfile(full):
                return False
            with open(full, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", mimetypes.guess_type(full)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            return True

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection(rest_host, rest_port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if not self._static():
                self._forward()

        do_POST = do_PATCH = do_DELETE = do_PUT = _forward

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rest", default="127.0.0.1:8081", help="the jobmanager's REST address")
    p.add_argument("--port", type=int, default=8090, help="the port to listen on (127.0.0.1)")
    a = p.parse_args()
    host, port = a.rest.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), handler(host, int(port)))
    print(f"dashboard from {STATIC} on http://127.0.0.1:{a.port}/ -> REST {a.rest}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
