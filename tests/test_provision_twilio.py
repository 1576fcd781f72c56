"""scripts/provision_twilio.py against the local Twilio API stand-in (tests/fake_twilio_api.py),
run as an operator runs it: a subprocess with the credentials in its environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT
from .fake_twilio_api import FakeTwilioApi

SID = "AC" + "a" * 32
TOKEN = "token-for-tests"
NUMBERS = ["+14155550100", "+14155550101"]
PASSWORD = "Bridge2026Trunk"


@pytest.fixture
def api():
    server = FakeTwilioApi(SID, TOKEN, numbers=NUMBERS + ["+14155550199"])
    yield server
    server.close()


def provision(
    api: FakeTwilioApi, *args: str, token: str = TOKEN, password: str | None = PASSWORD
) -> subprocess.CompletedProcess:
    env = dict(os.environ, TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN=token, TWILIO_API_BASE=api.base_url)
    if password:
        env["TWILIO_TERMINATION_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "provision_twilio.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


FULL = [
    "--name",
    "bridge-prod",
    "--domain",
    "bridge-prod.pstn.twilio.com",
    "--origination",
    "sip:edge1.example.com:5060 priority=10 weight=60",
    "--origination",
    "sip:edge2.example.com:5060 priority=10 weight=40",
    "--origination",
    "sip:standby.example.com:5060;transport=tcp priority=20",
    "--number",
    NUMBERS[0],
    "--number",
    NUMBERS[1],
    "--termination-ip",
    "203.0.113.10/32",
    "--termination-ip",
    "198.51.100.0/28",
    "--termination-user",
    "bridge",
    "--transfer",
    "enable-all",
]


def test_creates_everything_then_a_second_run_changes_nothing(api):
    first = provision(api, *FULL)
    assert first.returncode == 0, first.stderr
    trunk = next(iter(api.trunks.values()))
    assert trunk["friendly_name"] == "bridge-prod" and trunk["domain_name"] == "bridge-prod.pstn.twilio.com"
    assert (
        trunk["transfer_mode"] == "enable-all"
        and trunk["secure"] is False
        and trunk["transfer_caller_id"] == "from-transferee"
    )
    urls = {u["sip_url"]: (u["priority"], u["weight"], u["enabled"]) for u in api.origination[trunk["sid"]].values()}
    assert urls == {
        "sip:edge1.example.com:5060": (10, 60, True),
        "sip:edge2.example.com:5060": (10, 40, True),
        "sip:standby.example.com:5060;transport=tcp": (20, 10, True),
    }
    assert sorted(api.numbers[s]["phone_number"] for s in api.trunk_numbers[trunk["sid"]]) == NUMBERS
    (acl,) = api.acls.values()
    assert acl["friendly_name"] == "bridge-prod-ips" and api.trunk_acls[trunk["sid"]] == [acl["sid"]]
    assert sorted((a["ip_address"], a["cidr_prefix_length"]) for a in api.acl_addresses[acl["sid"]].values()) == [
        ("198.51.100.0", 28),
        ("203.0.113.10", 32),
    ]
    (cl,) = api.cls.values()
    (cred,) = api.credentials[cl["sid"]].values()
    assert (
        cred["username"] == "bridge"
        and api.passwords[cred["sid"]] == PASSWORD
        and api.trunk_cls[trunk["sid"]] == [cl["sid"]]
    )
    # What went over the wire: the trunk first, then everything hanging off it.
    posts = [p for m, p in api.changes()]
    assert posts[0] == "/v1/Trunks" and f"/v1/Trunks/{trunk['sid']}/OriginationUrls" in posts
    create = next(f for m, p, f in api.requests if m == "POST" and p == "/v1/Trunks")
    assert create == {
        "FriendlyName": "bridge-prod",
        "DomainName": "bridge-prod.pstn.twilio.com",
        "Secure": "false",
        "TransferMode": "enable-all",
        "TransferCallerId": "from-transferee",
    }
    assert "applied" in first.stdout and PASSWORD not in first.stdout + first.stderr

    before = len(api.changes())
    second = provision(api, *FULL)
    assert second.returncode == 0, second.stderr
    assert len(api.changes()) == before, api.changes()[before:]
    assert "no changes: the trunk is as asked" in second.stdout
    assert not [line for line in second.stdout.splitlines() if line[:1] in "+~-"], second.stdout


def test_dry_run_changes_nothing_and_prints_the_plan(api):
    result = provision(api, *FULL, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert api.changes() == [] and not api.trunks
    assert (
        "+ trunk 'bridge-prod'" in result.stdout
        and "+ origination sip:edge1.example.com:5060 priority=10 weight=60" in result.stdout
    )
    assert "plan: " in result.stdout and "dry run: nothing changed" in result.stdout


def test_update_changes_only_what_differs(api):
    assert provision(api, *FULL).returncode == 0
    trunk_sid = next(iter(api.trunks))
    # Someone added an origination URL by hand: it is left alone.
    api.origination[trunk_sid]["OUmanual"] = {
        "sid": "OUmanual",
        "trunk_sid": trunk_sid,
        "weight": 1,
        "priority": 1,
        "enabled": True,
        "friendly_name": "ops backup",
        "sip_url": "sip:backup.example.net",
    }
    before = len(api.changes())
    changed = [
        "--name",
        "bridge-prod",
        "--domain",
        "bridge-prod.pstn.twilio.com",
        "--origination",
        "sip:edge1.example.com:5060 priority=10 weight=50",
        "--origination",
        "sip:edge3.example.com:5060 priority=10 weight=50",
        "--number",
        NUMBERS[0],
        "--number",
        NUMBERS[1],
        "--termination-ip",
        "203.0.113.10/32",
        "--termination-user",
        "bridge",
        "--transfer",
        "sip-only",
        "--secure",
    ]
    result = provision(api, *changed)
    assert result.returncode == 0, result.stderr
    new = api.changes()[before:]
    trunk = api.trunks[trunk_sid]
    assert trunk["secure"] is True and trunk["transfer_mode"] == "sip-only"
    urls = {u["sip_url"]: u["weight"] for u in api.origination[trunk_sid].values()}
    assert urls == {"sip:edge1.example.com:5060": 50, "sip:edge3.example.com:5060": 50, "sip:backup.example.net": 1}
    (acl,) = api.acls.values()
    assert [a["ip_address"] for a in api.acl_addresses[acl["sid"]].values()] == ["203.0.113.10"]
    assert "left alone" in result.stdout and "backup.example.net" in result.stdout
    # One update of the trunk, one of edge1, one create, two deletes (edge2, standby) and one address delete; nothing else.
    assert len(new) == 6, new
    assert sum(1 for m, p in new if m == "DELETE") == 3, new


def test_remove_tears_down_and_is_idempotent(api):
    assert provision(api, *FULL).returncode == 0
    result = provision(api, "--name", "bridge-prod", "--remove")
    assert result.returncode == 0, result.stderr
    assert not api.trunks and not api.acls and not api.cls
    assert all(n["trunk_sid"] is None for n in api.numbers.values())
    assert "releasing +14155550100, +14155550101" in result.stdout
    before = len(api.changes())
    again = provision(api, "--name", "bridge-prod", "--remove")
    assert again.returncode == 0 and "no changes: nothing to remove" in again.stdout
    assert len(api.changes()) == before


def test_wrong_token_is_one_line_and_exit_1(api):
    result = provision(api, *FULL, token="wrong")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "401" in result.stderr and "20003" in result.stderr and "Traceback" not in result.stderr
    assert api.changes() == []


def test_number_the_account_does_not_own(api):
    result = provision(
        api, "--name", "bridge-prod", "--origination", "sip:edge1.example.com", "--number", "+14155550999"
    )
    assert result.returncode == 1
    assert "+14155550999" in result.stderr and "does not own" in result.stderr
    assert api.changes() == []  # checked before anything is made


def test_finds_its_trunk_on_a_later_page(api):
    """The account has 60 other trunks: ours is on the second page of 50."""
    for i in range(60):
        api.trunks[f"TKother{i:02d}"] = {
            "sid": f"TKother{i:02d}",
            "friendly_name": f"other-{i}",
            "domain_name": None,
            "secure": False,
            "transfer_mode": "disable-all",
            "transfer_caller_id": "from-transferee",
        }
        for table in (api.origination, api.trunk_numbers, api.trunk_acls, api.trunk_cls):
            table[f"TKother{i:02d}"] = {} if table is api.origination else []
    assert provision(api, "--name", "bridge-prod", "--origination", "sip:edge1.example.com").returncode == 0
    before = len(api.changes())
    result = provision(api, "--name", "bridge-prod", "--origination", "sip:edge1.example.com")
    assert result.returncode == 0 and "no changes" in result.stdout, result.stdout
    assert len(api.changes()) == before
    assert any("Page=1" in p for m, p, _ in api.requests if m == "GET" and p.startswith("/v1/Trunks?")), [
        p for _, p, _ in api.requests
    ][:5]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--origination", "sips:edge1.example.com"], "need a sip: URI"),
        (["--origination", "sip:a priority=x"], "priority=N"),
        (["--domain", "Bridge_Prod.example.com"], "pstn.twilio.com"),
        (["--number", "4155550100"], "E.164"),
        (["--termination-ip", "2001:db8::1"], "IPv4"),
        ([*sum((["--origination", f"sip:n{i}.example.com"] for i in range(11)), [])], "at most 10"),
    ],
)
def test_bad_arguments_exit_2_before_any_request(api, args, needle):
    result = provision(api, "--name", "x", *args)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert api.requests == []


def test_weak_termination_password_refused_before_any_request(api):
    result = provision(api, "--name", "x", "--termination-user", "bridge", password="short")
    assert result.returncode == 2 and "12+" in result.stderr
    assert api.requests == []
