"""Starting, finding and stopping the stack's server processes.

Each server runs detached in its own session (so stopping it also stops its
children), writes its output to one log file under the stack's ``logs``
folder, and is remembered by a pid file. A pid file is trusted only while the
process it names is alive and still runs the expected executable, so a stale
file or a reused pid is never mistaken for a running server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A stack component could not be installed, started, checked or stopped."""


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2
) -> None:
    """Polls ``condition`` until it is true; raises ``StackError`` at the deadline.

    A probe that raises ``StackError`` (e.g. "the server exited") ends the wait
    at once; any other exception from the probe means "not yet".
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except StackError:
            raise
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ListeningSocket:
    protocol: str  # tcp, tcp6, udp, udp6
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # a JVM shows 127.0.0.1 as ::ffff:127.0.0.1
        return address.is_loopback


def _decode_proc_address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # IPv6: four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def listening_sockets(pid: int) -> list[ListeningSocket]:
    """TCP sockets in LISTEN state and bound UDP sockets owned by ``pid``."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except (FileNotFoundError, PermissionError):
        return []
    found: list[ListeningSocket] = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        table = Path(f"/proc/{pid}/net/{protocol}")
        try:
            lines = table.read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            listening = state == "0A" if protocol.startswith("tcp") else state == "07"
            if listening and inode in inodes:
                host, port = _decode_proc_address(local)
                found.append(ListeningSocket(protocol, host, port))
    return sorted(set(found), key=lambda s: (s.protocol, s.port))


@dataclass
class ManagedProcess:
    """A detached server process remembered by a pid file."""

    name: str
    argv: Sequence[str]
    pid_file: Path
    log_file: Path
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    # When set, the running process is recognised by this text in its command line
    # instead of by the name of ``argv[0]`` (for servers that exec another program,
    # e.g. through setpriv, or that rewrite their process title, like nginx).
    match: str | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def pid(self) -> int | None:
        """The live pid of this server, or None when it is not running."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        cmdline = pid_cmdline(pid)
        if not cmdline:
            return None
        if self.match is not None:
            if self.match not in " ".join(cmdline):
                return None  # the pid was reused by an unrelated process
        elif Path(cmdline[0]).name != Path(self.argv[0]).name:
            return None  # the pid was reused by an unrelated process
        return pid

    def start(self) -> int:
        """Starts the server unless it already runs; returns its pid."""
        running = self.pid()
        if running is not None:
            return running
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        with self.log_file.open("ab") as log:
            self._popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._popen.pid}\n")
        return self._popen.pid

    def raise_if_exited(self) -> None:
        """Raises ``StackError`` when a process this object started has already died."""
        code = None if self._popen is None else self._popen.poll()
        if code is not None:
            raise StackError(f"{self.name} exited with code {code}; see {self.log_file}")

    def stop(self, timeout_s: float, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signals the server's process group, escalating to SIGKILL at the deadline."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, sig)
            try:
                wait_until(lambda: not pid_alive(pid), timeout_s, f"{self.name} to exit")
            except StackError:
                _signal_group(pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(pid), 10, f"{self.name} to die")
        if self._popen is not None:
            self._popen.poll()  # reap our own child so it leaves no zombie
            self._popen = None
        self.pid_file.unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
