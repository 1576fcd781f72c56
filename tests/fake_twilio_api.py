"""A local HTTP server that answers like Twilio's REST API, for tests.

twilio-python's client is pointed at it (a domain's ``base_url``); it records each
request's method, path and form parameters (``requests``). It serves, with Twilio's
shapes, status codes and error bodies (``{"code", "message", "more_info", "status"}``):

- ``api.twilio.com/2010-04-01``: ``Calls`` (create, update) and, with the account's
  state: ``IncomingPhoneNumbers`` (list, ``PhoneNumber`` filter), ``SIP/IpAccessControlLists``
  (+ ``IpAddresses``), ``SIP/CredentialLists`` (+ ``Credentials``, with Twilio's password
  rule);
- ``trunking.twilio.com/v1``: ``Trunks`` and their ``OriginationUrls`` (all five fields
  required, at most 10), ``PhoneNumbers``, ``CredentialLists``, ``IpAccessControlLists``.

Lists page like Twilio's (``PageSize``, default 50; v1 ``meta.next_page_url`` and
2010's ``next_page_uri``), so a client that reads only the first page is caught. Every
request must carry the account's HTTP Basic credentials (401, error 20003, otherwise),
and a path under another account is 404. A call can be updated only when it exists:
one created through ``Calls.json``, or one Twilio placed to the account's number
(:meth:`FakeTwilioApi.add_call`, e.g. the call a Media Streams test streams); any other
Call SID is 404 (20404), as on Twilio. Unknown resources are 404 (20404); a missing
required parameter 400 (21201 style); DELETE answers 204.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeTwilioApi:
    """See the module docstring. ``numbers``: E.164 numbers the account owns."""

    def __init__(self, account_sid: str, auth_token: str, numbers: list[str] | None = None) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        # sid -> resource dict; association tables keyed by trunk sid
        self.trunks: dict[str, dict] = {}
        self.origination: dict[str, dict[str, dict]] = {}
        self.trunk_numbers: dict[str, list[str]] = {}
        self.trunk_acls: dict[str, list[str]] = {}
        self.trunk_cls: dict[str, list[str]] = {}
        self.numbers: dict[str, dict] = {}
        self.acls: dict[str, dict] = {}
        self.acl_addresses: dict[str, dict[str, dict]] = {}
        self.cls: dict[str, dict] = {}
        self.credentials: dict[str, dict[str, dict]] = {}
        self.passwords: dict[str, str] = {}  # credential sid -> password (never returned, as on Twilio)
        self.calls: dict[str, dict] = {}  # Call SID -> its state
        for number in numbers or []:
            sid = self.sid("PN")
            self.numbers[sid] = {"sid": sid, "phone_number": number, "trunk_sid": None, "friendly_name": number}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
                url = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                outer.requests.append((method, url.path + (f"?{url.query}" if url.query else ""), form))
                try:
                    outer._auth(self.headers.get("Authorization"))
                    with outer.lock:
                        status, body = outer.route(method, url.path, query, form)
                except ApiError as exc:
                    status, body = (
                        exc.status,
                        {
                            "code": exc.code,
                            "message": exc.message,
                            "more_info": f"https://www.twilio.com/docs/errors/{exc.code}",
                            "status": exc.status,
                        },
                    )
                data = b"" if status == 204 else json.dumps(body).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ----------------------------------------------------------------- helpers

    def sid(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):032x}"

    def changes(self) -> list[tuple[str, str]]:
        """(method, path) of every request that changed something (POST, DELETE)."""
        return [(m, p) for m, p, _ in self.requests if m != "GET"]

    def add_call(self, call_sid: str, status: str = "in-progress") -> None:
        """A call Twilio placed to the account (an inbound call): it can be updated."""
        self.calls[call_sid] = {"sid": call_sid, "account_sid": self.account_sid, "status": status}

    def _auth(self, header: str | None) -> None:
        ok = False
        if header and header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            ok = user == self.account_sid and password == self.auth_token
        if not ok:
            raise ApiError(401, 20003, "Authenticate")

    @staticmethod
    def _require(form: dict, *names: str) -> None:
        for name in names:
            if name not in form or form[name] == "":
                raise ApiError(
                    400, 21201 if name != "Password" else 21622, f"Missing required parameter {name} in the post body"
                )

    def _page(self, items: list[dict], key: str, path: str, query: dict, v1: bool) -> dict:
        size = int(query.get("PageSize", 50))
        page = int(query.get("Page", 0))
        chunk = items[page * size : (page + 1) * size]
        more = (page + 1) * size < len(items)
        if v1:
            nxt = f"{self.base_url}{path}?PageSize={size}&Page={page + 1}&PageToken=PA{page + 1}" if more else None
            return {
                key: chunk,
                "meta": {
                    "page": page,
                    "page_size": size,
                    "key": key,
                    "url": f"{self.base_url}{path}",
                    "first_page_url": f"{self.base_url}{path}?PageSize={size}&Page=0",
                    "previous_page_url": None,
                    "next_page_url": nxt,
                },
            }
        nxt = f"{path}?PageSize={size}&Page={page + 1}&PageToken=PA{page + 1}" if more else None
        return {
            key: chunk,
            "page": page,
            "page_size": size,
            "start": page * size,
            "end": page * size + len(chunk) - 1,
            "uri": path,
            "first_page_uri": f"{path}?PageSize={size}&Page=0",
            "next_page_uri": nxt,
            "previous_page_uri": None,
        }

    @staticmethod
    def _bool(value: str) -> bool:
        return value.lower() == "true"

    # ------------------------------------------------------------------ routes

    def route(self, method: str, path: str, query: dict, form: dict) -> tuple[int, dict]:
        if path.startswith("/v1/Trunks"):
            return self._trunking(method, path, query, form)
        m = re.fullmatch(r"/2010-04-01/Accounts/(AC\w+)/(.*)", path)
        if not m:
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        account, rest = m.groups()
        if self.account_sid is not None and account != self.account_sid:
            raise ApiError(403, 20003, "Authenticate")
        return self._api(method, account, rest, path, query, form)

    def _trunk_json(self, t: dict) -> dict:
        return {**t, "url": f"{self.base_url}/v1/Trunks/{t['sid']}"}

    def _trunking(self, method: str, path: str, query: dict, form: dict) -> tuple[int, dict]:
        parts = path.strip("/").split("/")[1:]  # ["Trunks", sid?, sub?, subsid?]
        if parts == ["Trunks"]:
            if method == "GET":
                return 200, self._page([self._trunk_json(t) for t in self.trunks.values()], "trunks", path, query, True)
            if method == "POST":
                domain = form.get("DomainName")
                if domain and any(t["domain_name"] == domain for t in self.trunks.values()):
                    raise ApiError(400, 21248, f"Domain name {domain} is already in use")
                sid = self.sid("TK")
                self.trunks[sid] = {
                    "sid": sid,
                    "account_sid": self.account_sid,
                    "friendly_name": form.get("FriendlyName"),
                    "domain_name": domain,
                    "secure": self._bool(form.get("Secure", "false")),
                    "transfer_mode": form.get("TransferMode", "disable-all"),
                    "transfer_caller_id": form.get("TransferCallerId", "from-transferee"),
                    "cnam_lookup_enabled": False,
                    "disaster_recovery_url": None,
                    "disaster_recovery_method": None,
                }
                self.origination[sid], self.trunk_numbers[sid], self.trunk_acls[sid], self.trunk_cls[sid] = (
                    {},
                    [],
                    [],
                    [],
                )
                return 201, self._trunk_json(self.trunks[sid])
        if len(parts) < 2 or parts[1] not in self.trunks:
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        tsid = parts[1]
        trunk = self.trunks[tsid]
        if len(parts) == 2:
            if method == "GET":
                return 200, self._trunk_json(trunk)
            if method == "POST":
                for field, name in (
                    ("friendly_name", "FriendlyName"),
                    ("domain_name", "DomainName"),
                    ("transfer_mode", "TransferMode"),
                    ("transfer_caller_id", "TransferCallerId"),
                ):
                    if name in form:
                        trunk[field] = form[name]
                if "Secure" in form:
                    trunk["secure"] = self._bool(form["Secure"])
                return 200, self._trunk_json(trunk)
            if method == "DELETE":
                for psid in self.trunk_numbers.pop(tsid):
                    self.numbers[psid]["trunk_sid"] = None
                del self.trunks[tsid], self.origination[tsid], self.trunk_acls[tsid], self.trunk_cls[tsid]
                return 204, {}
        sub = parts[2]
        base = f"/v1/Trunks/{tsid}/{sub}"
        if sub == "OriginationUrls":
            table = self.origination[tsid]
            if len(parts) == 3 and method == "GET":
                return 200, self._page(list(table.values()), "origination_urls", path, query, True)
            if len(parts) == 3 and method == "POST":
                self._require(form, "Weight", "Priority", "Enabled", "FriendlyName", "SipUrl")
                if len(table) >= 10:
                    raise ApiError(400, 21245, "A trunk can have at most 10 origination URLs")
                sid = self.sid("OU")
                table[sid] = {
                    "sid": sid,
                    "trunk_sid": tsid,
                    "account_sid": self.account_sid,
                    "weight": int(form["Weight"]),
                    "priority": int(form["Priority"]),
                    "enabled": self._bool(form["Enabled"]),
                    "friendly_name": form["FriendlyName"],
                    "sip_url": form["SipUrl"],
                    "url": f"{self.base_url}{base}/{sid}",
                }
                return 201, table[sid]
            if len(parts) == 4 and parts[3] in table:
                item = table[parts[3]]
                if method == "GET":
                    return 200, item
                if method == "POST":
                    for field, name, conv in (
                        ("weight", "Weight", int),
                        ("priority", "Priority", int),
                        ("enabled", "Enabled", self._bool),
                        ("friendly_name", "FriendlyName", str),
                        ("sip_url", "SipUrl", str),
                    ):
                        if name in form:
                            item[field] = conv(form[name])
                    return 200, item
                if method == "DELETE":
                    del table[parts[3]]
                    return 204, {}
        associations = {
            "PhoneNumbers": (self.trunk_numbers, "PhoneNumberSid", self.numbers, "phone_numbers"),
            "IpAccessControlLists": (self.trunk_acls, "IpAccessControlListSid", self.acls, "ip_access_control_lists"),
            "CredentialLists": (self.trunk_cls, "CredentialListSid", self.cls, "credential_lists"),
        }
        if sub in associations:
            links, param, pool, key = associations[sub]
            linked = links[tsid]
            if len(parts) == 3 and method == "GET":
                return 200, self._page([{**pool[s], "trunk_sid": tsid} for s in linked], key, path, query, True)
            if len(parts) == 3 and method == "POST":
                self._require(form, param)
                sid = form[param]
                if sid not in pool:
                    raise ApiError(404, 20404, f"The requested resource {param}={sid} was not found")
                if sid in linked:
                    raise ApiError(
                        400, 21412 if sub == "PhoneNumbers" else 21220, f"{sid} is already associated with this trunk"
                    )
                if sub == "PhoneNumbers":
                    for other in self.trunk_numbers.values():  # a number belongs to one trunk
                        if sid in other:
                            other.remove(sid)
                    self.numbers[sid]["trunk_sid"] = tsid
                linked.append(sid)
                return 201, {**pool[sid], "trunk_sid": tsid}
            if len(parts) == 4 and parts[3] in linked and method == "DELETE":
                linked.remove(parts[3])
                if sub == "PhoneNumbers":
                    self.numbers[parts[3]]["trunk_sid"] = None
                return 204, {}
        raise ApiError(404, 20404, f"The requested resource {path} was not found")

    def _api(self, method: str, account: str, rest: str, path: str, query: dict, form: dict) -> tuple[int, dict]:
        if account != self.account_sid:
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        m = re.fullmatch(r"Calls(?:/(\w+))?\.json", rest)
        if m and method == "POST":
            sid = m.group(1)
            if sid is None:  # create: the first call's SID is fixed (CA999...), the rest counted
                self._require(form, "To", "From")
                sid = "CA" + "9" * 32 if "CA" + "9" * 32 not in self.calls else self.sid("CA")
                self.calls[sid] = {
                    "sid": sid,
                    "account_sid": account,
                    "status": "queued",
                    "to": form["To"],
                    "from": form["From"],
                }
            elif sid not in self.calls:
                raise ApiError(404, 20404, f"The requested resource {path} was not found")
            call = self.calls[sid]
            if "Status" in form:
                call["status"] = form["Status"]
            if "Twiml" in form:
                call["twiml"] = form["Twiml"]  # Twilio runs it at once: the call now follows it
            body = {**call, "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json"}
            return (201 if m.group(1) is None else 200), body
        if rest == "IncomingPhoneNumbers.json" and method == "GET":
            items = [
                n
                for n in self.numbers.values()
                if "PhoneNumber" not in query or n["phone_number"] == query["PhoneNumber"]
            ]
            return 200, self._page(items, "incoming_phone_numbers", path, query, False)
        m = re.fullmatch(
            r"SIP/(IpAccessControlLists|CredentialLists)(?:/(\w+))?(?:/(IpAddresses|Credentials)(?:/(\w+))?)?\.json",
            rest,
        )
        if not m:
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        kind, lsid, child, csid = m.groups()
        lists, children, prefix, key = (
            (self.acls, self.acl_addresses, "AL", "ip_access_control_lists")
            if kind == "IpAccessControlLists"
            else (self.cls, self.credentials, "CL", "credential_lists")
        )
        if lsid is None:
            if method == "GET":
                return 200, self._page(list(lists.values()), key, path, query, False)
            if method == "POST":
                self._require(form, "FriendlyName")
                sid = self.sid(prefix)
                lists[sid] = {
                    "sid": sid,
                    "account_sid": account,
                    "friendly_name": form["FriendlyName"],
                    "uri": f"/2010-04-01/Accounts/{account}/SIP/{kind}/{sid}.json",
                }
                children[sid] = {}
                return 201, lists[sid]
        if lsid not in lists:
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        if child is None:
            if method == "GET":
                return 200, lists[lsid]
            if method == "DELETE":
                table = self.trunk_acls if kind == "IpAccessControlLists" else self.trunk_cls
                if any(lsid in linked for linked in table.values()):
                    raise ApiError(400, 21219, "The list is in use by a trunk")
                del lists[lsid], children[lsid]
                return 204, {}
        table = children[lsid]
        if csid is None:
            if method == "GET":
                return 200, self._page(
                    list(table.values()),
                    "ip_addresses" if child == "IpAddresses" else "credentials",
                    path,
                    query,
                    False,
                )
            if method == "POST":
                if child == "IpAddresses":
                    self._require(form, "FriendlyName", "IpAddress")
                    item = {
                        "friendly_name": form["FriendlyName"],
                        "ip_address": form["IpAddress"],
                        "cidr_prefix_length": int(form.get("CidrPrefixLength", 32)),
                        "ip_access_control_list_sid": lsid,
                    }
                    sid = self.sid("IP")
                else:
                    self._require(form, "Username", "Password")
                    self._password(form["Password"])
                    if any(c["username"] == form["Username"] for c in table.values()):
                        raise ApiError(400, 21450, f"Username {form['Username']} already exists in this list")
                    item = {"username": form["Username"], "credential_list_sid": lsid}
                    sid = self.sid("CR")
                    self.passwords[sid] = form["Password"]
                table[sid] = {"sid": sid, "account_sid": account, **item}
                return 201, table[sid]
        if csid not in table:
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        if method == "GET":
            return 200, table[csid]
        if method == "POST" and child == "Credentials":
            self._require(form, "Password")
            self._password(form["Password"])
            self.passwords[csid] = form["Password"]
            return 200, table[csid]
        if method == "DELETE":
            del table[csid]
            return 204, {}
        raise ApiError(405, 20004, "Method not allowed")

    @staticmethod
    def _password(password: str) -> None:
        if (
            len(password) < 12
            or not re.search(r"\d", password)
            or not re.search(r"[a-z]", password)
            or not re.search(r"[A-Z]", password)
        ):
            raise ApiError(400, 21622, "Password must be at least 12 characters long, contain a digit and mixed case")
