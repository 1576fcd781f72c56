"""A local HTTP server that answers like Twilio's REST API (Calls resource), for tests.

twilio-python's client is pointed at it (``client.api.base_url``); it records each
request's method, path and form parameters.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeTwilioApi:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                outer.requests.append(("POST", self.path, form))
                parts = self.path.split("/")
                account = parts[3] if len(parts) > 3 else "AC"
                sid = parts[5].removesuffix(".json") if len(parts) > 5 and parts[5] != "Calls.json" else "CA" + "9" * 32
                body = {"sid": sid, "account_sid": account, "status": form.get("Status", "queued"), "to": form.get("To"), "from": form.get("From"),
                        "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json"}
                data = json.dumps(body).encode()
                self.send_response(201 if self.path.endswith("/Calls.json") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
