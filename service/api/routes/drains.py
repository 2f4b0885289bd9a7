"""Draining a server (it takes no new tenants and its tenants are moved to the others) and rebalancing the fleet:
both rollouts of moves (service/fleet/moves.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response, status

from service.api import convert, schemas
from service.api import lifecycle_schemas as ls
from service.api.deps import RolloutsDep
from service.api.problems import responses
from service.config import SERVER_NAME_PATTERN
from service.fleet import moves
from service.fleet.move_store import Drain

router = APIRouter(prefix="/servers", tags=["servers"])
rebalance_router = APIRouter(tags=["servers"])
ServerPath = Annotated[str, Path(pattern=SERVER_NAME_PATTERN, max_length=31, description="Server name.")]


def _out(server: str, found: Drain | None, left: int) -> ls.DrainOut:
    if found is None:
        return ls.DrainOut(server=server, draining=False, state=None, tenants=left)
    return ls.DrainOut(
        server=server,
        draining=True,
        state=found.state,  # type: ignore[arg-type]  # a rollout's state
        tenants=left,
        rollout=found.rollout_id,
        moved=found.moved,
        failed=found.failed,
        concurrency=found.concurrency,
        max_failures=found.max_failures,
        failures=found.failures,
    )


@router.post(
    "/{name}/drain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ls.DrainOut,
    responses=responses(409, 422, 503),
)
async def drain_server(
    name: ServerPath,
    rollouts: RolloutsDep,
    response: Response,
    body: Annotated[ls.DrainRequest | None, Body()] = None,
) -> ls.DrainOut:
    """Stop placing tenants on the server and move its tenants to the others: a rollout of moves (`concurrency` at
    a time, each a verified move; it stops starting moves past `max_failures`), resumed by any replica after a
    restart. Poll GET /servers/{name}/drain (or GET /rollouts/{rollout} for each tenant's result). Again while it
    runs: the same drain; after it ended: a new one for the tenants still there. `409 rollout_in_progress` while
    an undrain of it finishes its moves."""
    b = body if body is not None else ls.DrainRequest()
    await moves.drain(rollouts, name, b.concurrency, b.max_failures)
    response.headers["Location"] = f"/servers/{name}/drain"
    return _out(name, *await moves.state(rollouts, name))


@router.get("/{name}/drain", response_model=ls.DrainOut, responses=responses(422, 503))
async def drain_status(name: ServerPath, rollouts: RolloutsDep) -> ls.DrainOut:
    """Whether the server is draining, how far the drain is, and how many tenants are still on it."""
    return _out(name, *await moves.state(rollouts, name))


@router.post("/{name}/undrain", response_model=ls.DrainOut, responses=responses(422, 503))
async def undrain_server(name: ServerPath, rollouts: RolloutsDep) -> ls.DrainOut:
    """The server takes tenants again; its drain is cancelled after the moves it is running."""
    await moves.undrain(rollouts, name)
    return _out(name, *await moves.state(rollouts, name))


@rebalance_router.post(
    "/rebalance",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.RolloutOut,
    responses=responses(409, 422, 503),
)
async def rebalance(
    rollouts: RolloutsDep, response: Response, body: Annotated[ls.DrainRequest | None, Body()] = None
) -> schemas.RolloutOut:
    """Even tenant counts across the servers not draining: a rollout of moves (kind `rebalance`), planned now from
    the fullest server to the emptiest with room until they differ by at most one. Poll the Location. One runs at a
    time (`409 rollout_in_progress`)."""
    b = body if body is not None else ls.DrainRequest()
    started = await moves.rebalance(rollouts, b.concurrency, b.max_failures)
    response.headers["Location"] = f"/rollouts/{started.id}"
    return convert.rollout(started)
