"""Rollout routes: migrate the fleet to a version, watch it, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status

from service.api import convert, schemas
from service.api.deps import RolloutsDep
from service.api.problems import responses
from service.fleet.rollouts import RolloutRequest

router = APIRouter(prefix="/rollouts", tags=["rollouts"])
RolloutIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Rollout id.")]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.RolloutOut,
    responses=responses(404, 409, 422, 503),
)
async def start_rollout(
    rollouts: RolloutsDep,
    response: Response,
    body: Annotated[schemas.RolloutCreate | None, Body()] = None,
) -> schemas.RolloutOut:
    """Start migrating every ready tenant below the target (or those named); poll the Location for progress.

    Canaries run one at a time first and any failure among them stops the rollout; the rest run `concurrency` at a
    time until more than `max_failures` fail. One rollout runs at a time (`409 rollout_in_progress`). It survives a
    restart of the service, and any replica sharing the catalog takes it over when its driver dies.
    """
    b = body if body is not None else schemas.RolloutCreate()
    request = RolloutRequest(
        to_version=b.to_version,
        concurrency=b.concurrency,
        canary=b.canary,
        max_failures=b.max_failures,
        tenants=None if b.tenants is None else tuple(b.tenants),
    )
    started = await rollouts.start(request)
    response.headers["Location"] = f"/rollouts/{started.id}"
    return convert.rollout(started)


@router.get("", response_model=schemas.RolloutPage, responses=responses(422, 503))
async def list_rollouts(
    rollouts: RolloutsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Only rollouts older than this id.")] = None,
) -> schemas.RolloutPage:
    """Rollouts newest first, with their counts (not their tenants)."""
    found = await rollouts.page(before=before, limit=limit + 1)
    items = [convert.rollout_summary(r) for r in found[:limit]]
    return schemas.RolloutPage(items=items, next=found[limit - 1].id if len(found) > limit else None)


@router.get("/{rollout_id}", response_model=schemas.RolloutOut, responses=responses(404, 422, 503))
async def get_rollout(rollout_id: RolloutIdPath, rollouts: RolloutsDep) -> schemas.RolloutOut:
    """A rollout's state, its counts and each of its tenants."""
    return convert.rollout(await rollouts.get(rollout_id))


@router.post(
    "/{rollout_id}/cancel",
    response_model=schemas.RolloutOut,
    responses={
        202: {"model": schemas.RolloutOut, "description": "Cancelling: tenants being migrated finish first."},
        **responses(404, 409, 422, 503),
    },
)
async def cancel_rollout(rollout_id: RolloutIdPath, rollouts: RolloutsDep, response: Response) -> schemas.RolloutOut:
    """Start no more tenants. `200` once it is cancelled (also again); `202` while its running tenants finish."""
    found = await rollouts.cancel(rollout_id)
    if found.state == "running":
        response.status_code = status.HTTP_202_ACCEPTED
    return convert.rollout(found)
