"""The database servers tenants live on."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import schemas
from service.api.deps import ProvisionerDep
from service.api.problems import responses
from service.fleet.servers import states

router = APIRouter(tags=["servers"])


@router.get("/servers", response_model=schemas.ServerList, responses=responses(503))
async def list_servers(provisioner: ProvisionerDep) -> schemas.ServerList:
    """Every configured server in configuration order: its tenants (from the catalog), its capacity, and a health
    check of its own (a short query on a new connection). One server down is `"healthy": false` here, never a
    failure of this request; only the catalog being down is (503)."""
    found = await states(provisioner.servers)
    return schemas.ServerList(items=[schemas.ServerOut.model_validate(s, from_attributes=True) for s in found])
