"""The operating-system side of running a private postmaster: the unprivileged user PostgreSQL needs when we are
root, the file modes and owners that lets it reach, and its process and port."""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


# ---------------------------------------------------------------------- tools and the server log

# PG* variables (PGDATA, PGPORT, PGHOST, PGOPTIONS...) would silently change what the tools do.
_ENV_BLOCKLIST_PREFIX = "PG"
_LOG_TAIL_LINES = 30
_LOG_ROTATE_BYTES = 10 * 1024 * 1024


def run_tool(
    args: Sequence[str], *, cwd: Path, run_as: RunAs | None, timeout: float, stdin: IO[bytes] | None = None
) -> str | None:
    """Run a PostgreSQL tool (as ``run_as`` when given) with output to an anonymous file; None, or why it failed.

    Never pipes: the postmaster started by pg_ctl may hold inherited pipes open forever. ``cwd`` must be reachable
    by ``run_as`` (the caller's may not be).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_BLOCKLIST_PREFIX)}
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(
                args,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
                # None (not root) means "don't switch"; [] drops root's supplementary groups.
                user=None if run_as is None else run_as.uid,
                group=None if run_as is None else run_as.gid,
                extra_groups=None if run_as is None else [],
            )
            failure = None if proc.returncode == 0 else f"exited with status {proc.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:.0f}s"
        except OSError as exc:
            failure = f"could not be run: {exc}"
        if failure is None:
            return None
        out.seek(0)
        output = out.read().decode(errors="replace").strip()
    name = Path(args[0]).name
    return failure + (f"\n--- {name} output ---\n{output}" if output else "")


class ServerLog:
    """postgres.log: appended to across restarts (one previous file kept), its tail quoted in errors."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, offset: int) -> str:
        try:
            with self.path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self) -> str:
        """The last lines, formatted for appending to an error message."""
        lines = self.since(max(0, self.size() - 64 * 1024)).splitlines()[-_LOG_TAIL_LINES:]
        if not lines:
            return f"\n(no server log at {self.path})"
        return f"\n--- last {len(lines)} lines of {self.path} ---\n" + "\n".join(lines)

    def rotate(self) -> None:
        if self.size() > _LOG_ROTATE_BYTES:
            self.path.replace(self.path.with_name(self.path.name + ".1"))


class OwnerLock:
    """The exclusive flock on ``<data_dir>/.lock`` held from start() to stop(); it holds the owner's pid.

    The kernel drops it if the owner dies, which is how orphans are detected. The fd is close-on-exec, so the
    postmaster never inherits (and never keeps) the lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        # As root, data_dir belongs to PG_OS_USER: refuse a planted symlink or hard link, which would
        # otherwise make us truncate a file of the attacker's choice.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise EmbeddedError(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise EmbeddedError(f"lock file {self.path} is not a plain file with a single link")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedError(
                f"{self.path.parent} is in use by another process (pid {holder}); its server is left alone"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the only fd of the open file description drops the flock
