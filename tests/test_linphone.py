"""Linphone (Debian linphone-cli 5.1.65) calls the bridge with its defaults: its offer
(opus, speex, PCMU, PCMA, G.729 with an fmtp and no rtpmap, a guessed c= address)
gets a call with audio both ways, a typed DTMF digit reaches the conversation, and the
same over SIP/TLS with SDES-SRTP."""

from __future__ import annotations

import re
import subprocess

import pytest

from bridge.client import read_wav_8k

from .conftest import free_port, need, rtp_pair
from .linphone import Linphone
from .waiting import words

pytestmark = pytest.mark.e2e


def _question(tmp_path, speech):
    need("sox")
    path = tmp_path / "question.wav"
    # silence while the greeting plays, the question, then silence for the reply (the
    # file player loops: the pad keeps the question from coming round again)
    subprocess.run(
        ["sox", str(speech["saturday"]), "-r", "8000", "-c", "1", "-b", "16", str(path), "pad", "6", "30"], check=True
    )
    return path


def _call_id(bridge, transport: str) -> str:
    found = re.findall(rf"call (\S+): INVITE over {transport} from \S+ .*User-Agent=Linphonec/", bridge.log_text())
    assert found, bridge.log_text()[-3000:]
    return found[-1]


def test_linphone_default_offer_is_answered_with_audio_both_ways_and_dtmf(bridge, tmp_path, speech, asr):
    phone = Linphone(tmp_path, free_port(), rtp_pair()[0]).start()
    record = tmp_path / "heard.wav"
    try:
        phone.call(bridge.uri, _question(tmp_path, speech), record)
        assert phone.wait_for("connected.", 20), phone.output()[-2000:]
        call_id = _call_id(bridge, "UDP")
        log = lambda: bridge.log_text()  # noqa: E731
        assert re.search(rf"call {re.escape(call_id)}: answered PCMU/8000 pt=0 dtmf_pt=101 RTP", log())
        # Linphone put its own guess in c= (fd00::2 here): symmetric RTP latches to where its packets come from.
        assert bridge.wait_for_log("rtp: latched to 127.0.0.1:", 10), log()[-3000:]
        # The caller's question reached the agent (audio in), and was answered.
        assert bridge.wait_for_log(f"turn call={call_id} caller=", 25), log()[-3000:]
        turn = re.search(rf"turn call={re.escape(call_id)} caller='([^']*)' agent='([^']*)'", log())
        assert "saturday" in words(turn.group(1)) and turn.group(2), turn.group(0)
        phone.command("5")  # a digit typed during the call: RFC 4733 telephone-event
        assert bridge.wait_for_log(f"dtmf call={call_id} digit=5", 10), log()[-3000:]
    finally:
        phone.stop()
    # The agent's audio reached Linphone (audio out): its recording holds the greeting.
    heard = asr.transcribe(read_wav_8k(record)[: 8000 * 8])
    assert {"thanks", "calling"} <= words(heard), heard


def test_linphone_over_tls_with_sdes_srtp(bridge, tmp_path, speech, asr):
    settings = {
        "sip": {
            "sip_port": -1,
            "sip_tcp_port": -1,
            "sip_tls_port": free_port(),
            "media_encryption": "srtp",
            "media_encryption_mandatory": 1,
            "verify_server_certs": 0,
            "verify_server_cn": 0,
        }
    }
    phone = Linphone(tmp_path, -1, rtp_pair()[0], settings).start()
    record = tmp_path / "heard.wav"
    try:
        phone.call(f"sip:agent@127.0.0.1:{bridge.tls_port};transport=tls", _question(tmp_path, speech), record)
        assert phone.wait_for("connected.", 20), phone.output()[-2000:]
        call_id = _call_id(bridge, "TLS")
        assert re.search(rf"call {re.escape(call_id)}: answered PCMU/8000 .* SRTP", bridge.log_text()), (
            bridge.log_text()[-3000:]
        )
        assert bridge.wait_for_log(f"turn call={call_id} caller=", 25), bridge.log_text()[-3000:]
    finally:
        phone.stop()
    heard = asr.transcribe(read_wav_8k(record)[: 8000 * 8])
    assert {"thanks", "calling"} <= words(heard), heard
