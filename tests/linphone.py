"""Linphone's console client (Debian ``linphone-cli``, ``linphonec``) as a real SIP peer.

It runs with its own ``HOME`` (its ``.linphonerc`` and ``~/.local/share/linphone``, which
must exist before it starts or its core never opens a SIP socket), a file microphone
and speaker (``soundcard use files``, ``play FILE``, ``record FILE``; its player loops,
so callers pad the audio), and commands written to its stdin.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest


class Linphone:
    """One ``linphonec`` process. ``settings``: extra ``.linphonerc`` sections
    (``{"sip": {"media_encryption": "srtp"}}``)."""

    def __init__(self, home: Path, sip_port: int, rtp_port: int, settings: dict | None = None) -> None:
        exe = shutil.which("linphonec")
        if exe is None:
            pytest.fail("linphonec is not installed (Debian linphone-cli; scripts/setup.sh --test installs it)")
        self.exe = exe
        self.home = home
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict] = {"sip": {"sip_port": sip_port}, "rtp": {"audio_rtp_port": rtp_port}}
        for name, values in (settings or {}).items():
            sections.setdefault(name, {}).update(values)
        (home / ".linphonerc").write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in values.items()) for name, values in sections.items()
            )
        )
        self.log = home / "linphonec.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Linphone:
        self.proc = subprocess.Popen(
            [self.exe],
            env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"},
            stdin=subprocess.PIPE,
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.command("soundcard use files")
        return self

    def command(self, line: str, pause: float = 0.3) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        time.sleep(pause)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return True
            time.sleep(0.1)
        return False

    def call(self, uri: str, play: Path, record: Path) -> None:
        """Dial ``uri`` with ``play`` as the microphone and ``record`` as the speaker."""
        self.command(f"play {play}")
        self.command(f"record {record}")
        self.command(f"call {uri}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.command("terminate", 1.0)
            self.command("quit", 0.5)
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
