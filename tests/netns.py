"""Test hosts that are not loopback: a network namespace, optionally joined to this one by
a veth pair, whose addresses exist only inside this sandbox (RFC 2544's 198.18.0.0/15
benchmarking range). Created by the test, removed at the end. Needs root and iproute2."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

import pytest

_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Netns:
    """A network namespace with ``lo`` up. ``veth()`` joins it to this namespace.

    Attributes:
        name: the namespace's name.
        host_addr: our end of the veth pair (this namespace), once joined.
        peer_addr: its end (inside the namespace), once joined.
    """

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            pytest.fail("network-namespace tests need root and iproute2 (.ci/run runs as root)")
        n = next(_counter)
        self.index = (os.getpid() % 200) * 10 + n % 10
        self.name = f"bridge-test-{os.getpid()}-{n}"
        self.host_addr = ""
        self.peer_addr = ""
        self._veth = ""
        _ip("netns", "add", self.name)
        _ip("-n", self.name, "link", "set", "lo", "up")

    @property
    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def veth(self) -> tuple[str, str]:
        """Join the namespace to this one; returns ``(host_addr, peer_addr)`` (a /30)."""
        a, b = divmod(self.index, 64)
        base = f"198.{18 + a // 256}.{a % 256}.{b * 4}"
        net = base.rsplit(".", 1)[0]
        last = int(base.rsplit(".", 1)[1])
        self.host_addr, self.peer_addr = f"{net}.{last + 1}", f"{net}.{last + 2}"
        self._veth = f"vbr{self.index}a"
        _ip("link", "add", self._veth, "type", "veth", "peer", "name", f"vbr{self.index}b")
        _ip("link", "set", f"vbr{self.index}b", "netns", self.name)
        _ip("addr", "add", f"{self.host_addr}/30", "dev", self._veth)
        _ip("link", "set", self._veth, "up")
        _ip("-n", self.name, "addr", "add", f"{self.peer_addr}/30", "dev", f"vbr{self.index}b")
        _ip("-n", self.name, "link", "set", f"vbr{self.index}b", "up")
        return self.host_addr, self.peer_addr

    def run(self, cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *cmd], capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix, *cmd], **kw)

    def delete(self) -> None:
        """Remove the namespace (its veth end goes with it, and so does ours)."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        if self._veth:
            subprocess.run(["ip", "link", "del", self._veth], capture_output=True)
