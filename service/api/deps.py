"""FastAPI dependencies: the domain objects built in the lifespan, handed to routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.fleet.rollouts import Rollouts
from service.identifiers import TENANT_ID_PATTERN
from service.tenants.provisioner import Provisioner


def get_provisioner(request: Request) -> Provisioner:
    provisioner: Provisioner = request.app.state.provisioner
    return provisioner


def get_rollouts(request: Request) -> Rollouts:
    rollouts: Rollouts = request.app.state.rollouts
    return rollouts


ProvisionerDep = Annotated[Provisioner, Depends(get_provisioner)]
RolloutsDep = Annotated[Rollouts, Depends(get_rollouts)]
TenantIdPath = Annotated[str, Path(pattern=TENANT_ID_PATTERN, max_length=40, description="Tenant id.")]
