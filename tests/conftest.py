"""Shared fixtures: speech WAVs (espeak-ng), a real ``bridge serve`` process, the ASR model."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"

#: Every server the tests start, in process or not, keeps its call records in one
#: SQLite file of this run (nodes differ by SIP port), never in the checkout's data/.
#: Tests about records give their own storage.url.
RECORDS_DIR = Path(tempfile.mkdtemp(prefix="bridge-records-"))
os.environ.setdefault("BRIDGE_STORAGE__URL", f"sqlite:///{RECORDS_DIR}/bridge.db")
os.environ.setdefault("BRIDGE_STORAGE__SPOOL_DIR", str(RECORDS_DIR / "spool"))


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port that is free on 127.0.0.1 right now, for UDP (default) and TCP."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port(kind)
    return port


#: RTP ranges come from 20000-32767, below Linux's ephemeral ports (32768-60999, where
#: free_port() and every client socket live), handed out once each: no two ranges overlap.
#: Each pytest-xdist worker has a slice of its own (PYTEST_XDIST_WORKER is gw0, gw1, ...).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
_RTP_SLICE = (32766 - 20000 + 1) // _WORKERS // 2 * 2
_RTP_LOW = 20000 + _WORKER * _RTP_SLICE
_RTP_HIGH = _RTP_LOW + _RTP_SLICE - 1
_rtp_next = [_RTP_LOW + (os.getpid() % 40) * (_RTP_SLICE // 40) // 2 * 2]
_rtp_lock = threading.Lock()


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def rtp_range(pairs: int = 10) -> str:
    """``"LOW-HIGH"``: ``pairs`` even RTP ports (and their odd RTCP neighbours) that no other
    range from this allocator holds and that are free now. The one source of RTP ports in tests.
    """
    with _rtp_lock:
        for _ in range(2000):
            low = _rtp_next[0]
            high = low + 2 * pairs - 1
            if high > _RTP_HIGH:
                _rtp_next[0] = _RTP_LOW
                continue
            _rtp_next[0] = high + 1
            if all(_udp_free(p) for p in range(low, high + 1, 2)):
                return f"{low}-{high}"
    raise RuntimeError("no free RTP range")


def rtp_pair() -> tuple[int, int]:
    """Two ports (even, odd) from :func:`rtp_range` for a peer's own RTP (baresip)."""
    low, high = map(int, rtp_range(2).split("-"))
    return low, low + 3


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN), PEM: ``(cert, key)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _ErrorRecords(logging.Handler):
    """Collects ERROR (and worse) records from the bridge and from asyncio (which logs
    "Task exception was never retrieved" and exceptions in callbacks)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("bridge", "asyncio")):
            self.records.append(record)


#: Fixtures that load the real models or start real servers and peers: a test that
#: takes one belongs to the slow tier (``pytest -m "not slow"`` leaves it out).
SLOW_FIXTURES = frozenset({"engines", "asr", "speech", "bridge", "postgres"})


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every end-to-end test and every test that takes a slow fixture; a
    module marks itself ``slow`` where its cost is its own (subprocesses, servers)."""
    for item in items:
        if item.get_closest_marker("e2e") or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def no_error_logs(request):
    """Every in-process test fails on an ERROR log record or an unhandled task exception,
    unless marked ``allow_errors`` (a test that provokes one on purpose)."""
    import gc

    handler = _ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
        gc.collect()  # tasks whose exception nobody retrieved report it when collected
    finally:
        root.removeHandler(handler)
    if request.node.get_closest_marker("allow_errors") is None and handler.records:
        lines = [
            f"{r.name}: {r.getMessage()}" + (f" ({r.exc_info[1]!r})" if r.exc_info else "") for r in handler.records[:5]
        ]
        pytest.fail("ERROR log records during the test:\n" + "\n".join(lines), pytrace=False)


def missing(what: str) -> None:
    """A real component a test needs is not installed: skip it on a developer's machine,
    fail it under ``CI=true`` (CI installs everything; a skip there hides a broken setup)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: a missing component is a failure)")
    pytest.skip(what)


def chromium() -> str:
    """Debian's chromium for Playwright's ``executable_path`` (no browser download)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    missing("chromium not installed (Debian package chromium; scripts/setup.sh --test installs it)")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (.ci/run installs it)")
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> dict[str, Path]:
    """Caller utterances as 16-bit WAVs made with espeak-ng."""
    need("espeak-ng")
    folder = tmp_path_factory.mktemp("speech")
    texts = {
        "saturday": "What time do you open on Saturday?",
        "cleaning": "How much does a cleaning cost?",
        "where": "Where is the clinic?",
        "appointment": "I want to check my appointment.",
        "bye": "Thank you, goodbye.",
        "person": "Can I talk to a real person, please?",
    }
    out = {}
    for name, text in texts.items():
        path = folder / f"{name}.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True)
        out[name] = path
    return out


@pytest.fixture(scope="session")
def engines():
    """The embedded models (VAD, ASR, LLM, TTS), loaded once for in-process tests."""
    from bridge.config import load_settings
    from bridge.warmup import load_warm_engines

    return load_warm_engines(load_settings(overrides={"models": {"cache_dir": str(ROOT / "models")}}))


@pytest.fixture(scope="session")
def asr(engines):
    """The embedded faster-whisper model, to transcribe what the agent said."""
    return engines.asr


class BridgeProcess:
    """A ``bridge serve`` subprocess on 127.0.0.1 with its own ports and log."""

    def __init__(
        self,
        workdir: Path,
        config: dict,
        tls: bool = False,
        rtp_count: int = 10,
        listen_host: str = "127.0.0.1",
        prefix: list[str] | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NAME]: run inside a network namespace
        self.sip_port = free_port()
        self.metrics_port = free_port(socket.SOCK_STREAM)
        self.rtp_count = rtp_count
        self.tls_port = free_port(socket.SOCK_STREAM) if tls else None
        if tls:
            self.cert, self.key = make_certificate(workdir)
            config = {
                **config,
                "sip": {
                    **config.get("sip", {}),
                    "tls_listen": f"127.0.0.1:{self.tls_port}",
                    "tls_cert": str(self.cert),
                    "tls_key": str(self.key),
                },
            }
        self.rtp_ports = rtp_range(rtp_count)
        self.log_path = workdir / f"bridge-{self.sip_port}.log"
        self.config_path = workdir / f"bridge-{self.sip_port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.own_storage = "storage" in config  # then the session-wide BRIDGE_STORAGE__* do not apply
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._ready = threading.Event()

    @property
    def uri(self) -> str:
        return f"sip:agent@127.0.0.1:{self.sip_port}"

    def start(self, timeout: float = 120) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.own_storage:
            env.pop("BRIDGE_STORAGE__URL", None)
            env.pop("BRIDGE_STORAGE__SPOOL_DIR", None)
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "bridge",
                "serve",
                "--config",
                str(self.config_path),
                "--sip-listen",
                f"{self.listen_host}:{self.sip_port}",
                "--rtp-ports",
                self.rtp_ports,
                "--metrics-listen",
                f"127.0.0.1:{self.metrics_port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            pytest.fail("bridge serve did not become ready:\n" + "".join(self.lines[-40:]))

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                self.lines.append(line)
                log.write(line)
                log.flush()
                if "bridge: ready" in line:
                    self._ready.set()

    def log_text(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, needle: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


TEST_CONFIG = {
    # Ring for a second so that a CANCEL can arrive before the answer.
    "sip": {"answer_delay": 1.0, "drain_timeout": 5},
    # Short enough for the "BYE from the bridge" scenario, long for real peers (they stream).
    "media": {"rtp_timeout": 4},
    "models": {"cache_dir": str(ROOT / "models")},
    "observability": {"log_level": "INFO"},
    # Press 0 for the operator: a blind transfer with REFER.
    "transfer": {"target": "sip:+14155550100@example.pstn.twilio.com", "dtmf": "0"},
}


@pytest.fixture(scope="session")
def bridge(tmp_path_factory):
    """One ``bridge serve`` for the end-to-end tests (models load once)."""
    server = BridgeProcess(tmp_path_factory.mktemp("bridge"), TEST_CONFIG, tls=True)
    server.start()
    yield server
    code = server.stop()
    assert code == 0, "bridge serve did not exit cleanly on SIGTERM:\n" + server.log_text()[-3000:]
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session (tests/postgres.py); tests take
    their own database on it with :func:`tests.postgres.new_database`."""
    from .postgres import PostgresServer

    server = PostgresServer(free_port(socket.SOCK_STREAM))
    server.start()
    yield server
    server.remove()
