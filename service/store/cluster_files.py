"""What the embedded cluster keeps beside ``pgdata/`` so that it is locked and always at the same address.

- ``superuser.password``: the password of the database superuser, generated at the first start, mode 0600 and
  owned by the user the service runs as (as root, postgres runs as another OS user, which never needs it: the
  server holds only the SCRAM verifier). The service and ``tenantctl psql`` read it; nobody else can.
- ``port``: the TCP port on 127.0.0.1, chosen once and reused at every start, so that every tenant
  ``connection_url`` handed out stays valid across restarts.
- ``pgdata/pg_hba.conf``: password (SCRAM) authentication for every connection. A cluster made before that (with
  ``trust`` lines) is rewritten in place at start.

Files are replaced atomically (write a new file, then rename) and never followed through symlinks: as root the data
directory belongs to the server's OS user, who could otherwise plant one.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import Final

from service.store.processes import EmbeddedError, RunAs

PASSWORD_FILE: Final = "superuser.password"  # noqa: S105 - a file name
PORT_FILE: Final = "port"
#: The database superuser initdb creates.
PG_SUPERUSER: Final = "postgres"

_PASSWORD: Final = re.compile(r"^[A-Za-z0-9_-]{16,200}$")
_HBA: Final = """\
# Written by tenant-provisioner: a password (SCRAM-SHA-256) for every connection, trust nowhere.
# The server listens on 127.0.0.1 only; the superuser's password is in ../superuser.password.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""


def new_password() -> str:
    """256 random bits in URL-safe characters: nothing to quote in a URL or an SQL literal."""
    return secrets.token_urlsafe(32)


def superuser_url(password: str, port: int) -> str:
    return f"postgresql://{PG_SUPERUSER}:{password}@127.0.0.1:{port}/postgres"


def read_private(path: Path) -> str | None:
    """The text of a plain file we wrote, or None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EmbeddedError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EmbeddedError(f"{path} is not a plain file")
        return os.read(fd, 4096).decode(errors="replace").strip()
    finally:
        os.close(fd)


def write_private(path: Path, text: str, owner: RunAs | None = None) -> None:
    """Replace ``path`` atomically with a 0600 file (handed to ``owner`` when given), synced to disk."""
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(scratch, path)
    except OSError:
        scratch.unlink(missing_ok=True)
        raise


def read_password(data_dir: Path) -> str | None:
    path = data_dir / PASSWORD_FILE
    password = read_private(path)
    if password is not None and not _PASSWORD.fullmatch(password):
        raise EmbeddedError(
            f"{path} must hold 16 or more of the characters A-Z a-z 0-9 - _; delete it and start again to have a "
            "new password generated"
        )
    return password


def password(data_dir: Path) -> tuple[str, bool]:
    """The superuser's password and whether it was just made (so the cluster does not know it yet)."""
    found = read_password(data_dir)
    if found is not None:
        return found, False
    made = new_password()
    write_private(data_dir / PASSWORD_FILE, made + "\n")
    return made, True


def stored_port(data_dir: Path) -> int | None:
    path = data_dir / PORT_FILE
    text = read_private(path)
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise EmbeddedError(f"{path} must hold a port number; delete it to have a free port chosen")
    return int(text)


def store_port(data_dir: Path, port: int) -> None:
    write_private(data_dir / PORT_FILE, f"{port}\n")


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (a socket in TIME_WAIT does not count, as for postgres)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def hba_trusts(pgdata: Path) -> bool:
    """Whether pg_hba.conf lets anyone in without a password (a cluster made before passwords were required)."""
    text = read_private(pgdata / "pg_hba.conf") or ""
    lines = (line.split("#", 1)[0].split() for line in text.splitlines())
    return any(fields and "trust" in fields for fields in lines)


def write_hba(pgdata: Path, owner: RunAs | None) -> None:
    write_private(pgdata / "pg_hba.conf", _HBA, owner)


def url_of(data_dir: Path) -> str:
    """The superuser URL of the cluster in ``data_dir``, from its files (for an operator's shell)."""
    found, port = read_password(data_dir), stored_port(data_dir)
    if found is None or port is None:
        raise EmbeddedError(
            f"no embedded PostgreSQL has run in {data_dir} (no {PASSWORD_FILE} or {PORT_FILE}): start the service "
            "first (tenantctl serve), or set TENANTS_DATA_DIR to its data directory"
        )
    return superuser_url(found, port)
