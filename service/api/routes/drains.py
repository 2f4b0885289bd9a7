"""Draining a server: it takes no new tenants and its tenants are moved to the others."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response, status

from service.api import lifecycle_schemas as ls
from service.api.deps import ProvisionerDep
from service.api.problems import responses
from service.config import SERVER_NAME_PATTERN
from service.fleet import drains
from service.store.lifecycle import Drain

router = APIRouter(prefix="/servers", tags=["servers"])
ServerPath = Annotated[str, Path(pattern=SERVER_NAME_PATTERN, max_length=31, description="Server name.")]


def _out(server: str, found: Drain | None, left: int) -> ls.DrainOut:
    if found is None:
        return ls.DrainOut(server=server, draining=False, state=None, tenants=left)
    return ls.DrainOut(
        server=server,
        draining=True,
        state="running" if found.state == "running" else "succeeded" if found.state == "succeeded" else "failed",
        tenants=left,
        moved=found.moved,
        failed=found.failed,
        concurrency=found.concurrency,
        max_failures=found.max_failures,
        error=found.error,
    )


@router.post(
    "/{name}/drain", status_code=status.HTTP_202_ACCEPTED, response_model=ls.DrainOut, responses=responses(422, 503)
)
async def drain_server(
    name: ServerPath,
    provisioner: ProvisionerDep,
    response: Response,
    body: Annotated[ls.DrainRequest | None, Body()] = None,
) -> ls.DrainOut:
    """Stop placing tenants on the server and move its tenants to the others (`concurrency` at a time, each a
    verified move; it stops `failed` past `max_failures`). It survives a restart: any replica drives it. Poll GET
    /servers/{name}/drain. Again on a finished drain: resumes it."""
    b = body if body is not None else ls.DrainRequest()
    await drains.start(provisioner, name, b.concurrency, b.max_failures)
    response.headers["Location"] = f"/servers/{name}/drain"
    return _out(name, *await drains.get(provisioner, name))


@router.get("/{name}/drain", response_model=ls.DrainOut, responses=responses(422, 503))
async def drain_status(name: ServerPath, provisioner: ProvisionerDep) -> ls.DrainOut:
    """Whether the server is draining, how far the drain is, and how many tenants are still on it."""
    return _out(name, *await drains.get(provisioner, name))


@router.post("/{name}/undrain", response_model=ls.DrainOut, responses=responses(422, 503))
async def undrain_server(name: ServerPath, provisioner: ProvisionerDep) -> ls.DrainOut:
    """The server takes tenants again; a drain in progress stops after the moves it is running."""
    await drains.stop(provisioner, name)
    return _out(name, *await drains.get(provisioner, name))
