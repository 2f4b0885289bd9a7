"""The operating-system side of running a private postmaster: the unprivileged user PostgreSQL needs when we are
root, the file modes and owners that lets it reach, and its process and port."""

from __future__ import annotations

import logging
import os
import pwd
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("service.store.embedded")

#: OS user that runs the server when we are root (PostgreSQL refuses to run as root).
PG_OS_USER = "tenants-pg"


class EmbeddedError(Exception):
    """The embedded cluster could not be set up, started or stopped; the message says why."""


@dataclass(frozen=True)
class RunAs:
    """The unprivileged identity used for PostgreSQL tools when we are root."""

    uid: int
    gid: int


# ---------------------------------------------------------------------- root support


def ensure_os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        pass
    logger.warning("creating system user %s: PostgreSQL refuses to run as root", PG_OS_USER)
    args = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER]
    with tempfile.TemporaryFile() as out:
        try:
            subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedError(f"could not create OS user {PG_OS_USER}: {exc}") from exc
        out.seek(0)
        output = out.read().decode(errors="replace").strip()
    try:  # a concurrent useradd may have failed ours yet created the user: look, don't trust status
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise EmbeddedError(f"could not create OS user {PG_OS_USER}: {output}") from None


def grant_search(dirs: Iterable[Path]) -> None:
    """Add o+x to each directory lacking it, so PG_OS_USER can pass through without listing it."""
    for d in dirs:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(d, stat.S_IMODE(mode) | stat.S_IXOTH)
            logger.warning("added search permission (o+x, no read) to %s so %s can reach it", d, PG_OS_USER)


def grant_read_tree(root: Path) -> None:
    """``chmod -R o+rX`` on the bundled install, touching only entries that lack it."""
    changed = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for path, is_dir in [(dirpath, True)] + [(os.path.join(dirpath, f), False) for f in filenames]:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            want = stat.S_IROTH
            if is_dir or st.st_mode & stat.S_IXUSR:
                want |= stat.S_IXOTH
            if st.st_mode & want != want:
                os.chmod(path, stat.S_IMODE(st.st_mode) | want)
                changed += 1
    if changed:
        logger.warning("added o+rX to %d entries under %s so %s can run it", changed, root, PG_OS_USER)


def chown(path: Path | str, run_as: RunAs) -> None:
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
        os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)


def chown_tree(root: Path, run_as: RunAs) -> None:
    """Hand a tree to PG_OS_USER; fd-relative, so swapping a directory for a symlink mid-walk
    cannot redirect a chown outside the tree."""
    chown(root, run_as)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in dirnames + filenames:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
                os.chown(name, run_as.uid, run_as.gid, dir_fd=dirfd, follow_symlinks=False)


# ---------------------------------------------------------------------- processes and ports


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process; zombies linger under a non-reaping init."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        # Without procfs (macOS) trust kill(0); with it, a missing entry means it just exited.
        return not Path("/proc/self").exists()
    return raw.rsplit(")", 1)[-1].split()[0] != "Z"


def is_postmaster(pid: int, uid: int) -> bool:
    """Whether ``pid`` is a live postgres process of ``uid``, not an unrelated reuse of the pid."""
    if not pid_alive(pid):
        return False
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs: trust the pid file
    except OSError:
        return False
    return owner == uid and b"postgres" in cmdline


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    """A port free on 127.0.0.1 right now (another process may still take it before postgres)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def wait_accepting(port: int, timeout: float) -> None:
    """Wait until a PostgreSQL server answers on 127.0.0.1:port.

    Sends an SSLRequest, to which any PostgreSQL answers a single 'S' or 'N' byte: this proves the
    listener is a postgres, not merely that something holds the port.
    """
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as conn:
                conn.sendall(_SSL_REQUEST)
                if conn.recv(1) in (b"S", b"N"):
                    return
                last_error = "unexpected answer to SSLRequest"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise EmbeddedError(f"PostgreSQL on 127.0.0.1:{port} not accepting connections after {timeout:.0f}s: {last_error}")
