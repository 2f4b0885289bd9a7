"""The image's command, run the way the image runs it, without a container engine.

The final stage of the Dockerfile is read (ENV, WORKDIR, USER, CMD, VOLUME) and reproduced in a private directory:
``/app`` becomes a read-only copy of the shipped migrations owned by root, ``/data`` an empty directory owned by the
unprivileged user, and the command runs as that user with the image's environment (paths mapped). The image's user
(uid 10001) does not exist here, and PostgreSQL needs a user that ``getpwuid`` knows: when root, ``nobody`` stands in
for it; otherwise the current user, who is not root either.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.process import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "container-test-admin-token-0123456789"


@dataclass
class Stage:
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    cmd: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)


def final_stage(dockerfile: Path) -> Stage:
    """The instructions of the last ``FROM`` that decide how the service runs (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    stage = Stage()
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            stage = Stage()
        elif word == "ENV":
            stage.env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
        elif word == "WORKDIR":
            stage.workdir = rest.strip()
        elif word == "USER":
            stage.user = rest.strip()
        elif word == "CMD":
            stage.cmd = json.loads(rest)
        elif word == "VOLUME":
            stage.volumes = json.loads(rest)
    return stage


def _runner() -> tuple[pwd.struct_passwd, str]:
    """The non-root user to run as, and an interpreter with this project's packages that it can execute."""
    user = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version) or "", f"/usr/bin/{version}"):
        if candidate and _can_run(user, candidate):
            return user, candidate
    pytest.skip(f"no {version} that user {user.pw_name} may execute")


def _can_run(user: pwd.struct_passwd, python: str) -> bool:
    kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if os.geteuid() == 0 else {}
    try:
        done = subprocess.run([python, "-c", "pass"], capture_output=True, timeout=30, check=False, **kwargs)  # type: ignore[call-overload]
    except OSError:
        return False
    return bool(done.returncode == 0)


@dataclass
class Image:
    root: Path
    stage: Stage
    user: pwd.struct_passwd
    python: str

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def env(self, **extra: str) -> dict[str, str]:
        """The image's ENV with paths moved under ``root``, and the project's packages importable."""
        mapped = {k: str(self.path(v)) if v.startswith("/") else v for k, v in self.stage.env.items()}
        site = [p for p in sys.path if p.endswith("site-packages")]
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.path(self.stage.workdir)),
            "PYTHONPATH": os.pathsep.join([str(ROOT), *site]),
            **mapped,
            **extra,
        }

    def command(self, port: int) -> list[str]:
        """CMD, with ``tenantctl`` as ``python -m service`` and our free port for the image's 8000."""
        assert self.stage.cmd[0] == "tenantctl"
        args = [str(port) if a == "8000" else a for a in self.stage.cmd[1:]]
        return [self.python, "-m", "service", *args]

    def run(self, port: int, **env: str) -> subprocess.Popen[bytes]:
        kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if os.geteuid() == 0 else {}
        with (self.root / "stdout").open("wb") as out, (self.root / "stderr").open("wb") as err:
            return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
                self.command(port),
                env=self.env(**env),
                cwd=self.path(self.stage.workdir),
                stdout=out,
                stderr=err,
                **kwargs,
            )

    def stderr(self) -> str:
        return (self.root / "stderr").read_text(errors="replace")


@pytest.fixture
def image() -> Iterator[Image]:
    stage = final_stage(ROOT / "Dockerfile")
    user, python = _runner()
    shm = Path("/dev/shm")  # noqa: S108 - only the parent of a private mkdtemp directory
    root = Path(tempfile.mkdtemp(prefix="image-", dir=shm if shm.is_dir() else None))
    os.chmod(root, 0o755)  # noqa: S103 - the user must reach /app and /data, as in the image's /
    made = Image(root, stage, user, python)
    app = made.path(stage.workdir)
    app.mkdir(parents=True)
    shutil.copytree(ROOT / "migrations", made.path(stage.env["TENANTS_MIGRATIONS_DIR"]))
    for dirpath, dirnames, filenames in os.walk(app):  # COPY as root: read-only for the service's user
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)  # noqa: S103 - read-only, as COPY leaves it
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
    os.chmod(app, 0o555)  # noqa: S103 - read-only, as COPY leaves it
    try:
        yield made
    finally:
        for pidfile in root.glob("**/postmaster.pid"):  # safety net for a failed test
            subprocess.run(["pkill", "-QUIT", "-F", str(pidfile)], check=False)
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_image_command_runs_the_embedded_cluster_in_data(image: Image) -> None:
    assert image.stage.user != "root"
    assert image.stage.user.split(":")[0] != "0"
    assert image.stage.env.get("TENANTS_DATA_DIR") in image.stage.volumes
    assert "TENANTS_DATABASE_URL" not in image.stage.env
    data = image.path(image.stage.env["TENANTS_DATA_DIR"])
    data.mkdir(mode=0o700)  # the image's fresh /data: owned by its user
    os.chown(data, image.user.pw_uid, image.user.pw_gid)

    port = free_port()
    proc = image.run(port, TENANTS_ADMIN_TOKEN=TOKEN)
    try:
        _wait_ready(image, proc, port)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        created = httpx.post(f"http://127.0.0.1:{port}/tenants", json={"id": "acme"}, headers=headers, timeout=60)
        assert created.status_code == 201, created.text
        assert (data / "pgdata" / "PG_VERSION").is_file()
        secret = data / "superuser.password"
        assert (secret.stat().st_uid, oct(secret.stat().st_mode & 0o777)) == (image.user.pw_uid, "0o600")
        assert not any(p.name != "migrations" for p in image.path(image.stage.workdir).iterdir())  # wrote nothing
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM), image.stderr()
    assert "Traceback" not in image.stderr()
    assert not (data / "pgdata" / "postmaster.pid").exists()


def test_image_without_a_writable_data_volume_says_so_in_one_sentence(image: Image) -> None:
    data = image.path(image.stage.env["TENANTS_DATA_DIR"])
    data.mkdir(mode=0o755)  # a bind mount of a root-owned host folder
    proc = image.run(free_port(), TENANTS_ADMIN_TOKEN=TOKEN, TENANTS_LOG_FORMAT="json")
    proc.wait(timeout=60)
    text = image.stderr()
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    said = [line for line in text.splitlines() if not line.startswith("{")]
    assert said[0].startswith(
        f"The service did not start: the embedded PostgreSQL needs a writable data directory, and {data} is not "
        "writable"
    )
    assert "TENANTS_DATABASE_URL" in said[0]


def _wait_ready(image: Image, proc: subprocess.Popen[bytes], port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {image.stderr()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the service did not become ready")
