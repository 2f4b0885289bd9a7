"""The console's pages: each parses its query, makes the same domain calls as the JSON routes, and renders a template.

Pages only read (the catalog, and one tenant's own history on its page); actions are made by the pages' script
through the JSON API. Pages are left out of the OpenAPI document: they are not part of the API.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from service.api.deps import ProvisionerDep, RolloutsDep, TenantIdPath
from service.api.routes.rollouts import RolloutIdPath
from service.api.ui import session, view
from service.api.ui.session import Role
from service.errors import InvalidRequest, ServiceError, TenantNotReady, Unauthorized
from service.fleet import moves
from service.store import catalog
from service.store.listing import Browse
from service.tenants.status import SchemaStatus

router = APIRouter(prefix="/ui", include_in_schema=False, default_response_class=HTMLResponse)
ViewerDep = Annotated[Role, Depends(session.viewer)]
PAGE_SIZE: Final = 50
_SORTS: Final = ("id", "version", "updated")
_RECENT_ROLLOUTS: Final = 3  # on the overview; each costs a count of its tenants


@router.get("")
async def overview(request: Request, role: ViewerDep, provisioner: ProvisionerDep, rollouts: RolloutsDep) -> Response:
    """The fleet: counts by version (bars), state and status, servers, and the newest rollouts."""
    # Catalog connections of their own: the aggregate, the rollouts' counts and the drains are read at once.
    counts, recent, drains = await asyncio.gather(
        provisioner.fleet(), rollouts.page(before=None, limit=_RECENT_ROLLOUTS), moves.drains(rollouts)
    )
    latest = provisioner.migrations.latest_version
    servers = [(t.name, counts.by_server.get(t.name, 0), t.capacity, drains.get(t.name)) for t in provisioner.servers]
    return view.render(
        request,
        "overview.html",
        role,
        counts=counts,
        latest=latest,
        bars=view.version_bars(counts.by_version, latest),
        states=catalog.STATES,
        statuses=catalog.CATALOG_STATUSES,
        servers=servers,
        rollouts=recent,
        running=next((r for r in recent if r.state == "running"), None),
    )


@router.get("/tenants")
async def tenants(
    request: Request,
    role: ViewerDep,
    provisioner: ProvisionerDep,
    q: Annotated[str, Query(max_length=40)] = "",
    state: Annotated[str, Query(max_length=20)] = "",
    status_: Annotated[str, Query(alias="status", max_length=20)] = "",
    server: Annotated[str, Query(max_length=64)] = "",
    version: Annotated[str, Query(max_length=7)] = "",
    sort: Annotated[str, Query(max_length=10)] = "id",
    order: Annotated[str, Query(max_length=4)] = "asc",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """The tenant list: searched by id, filtered, sorted, a page at a time (catalog only)."""
    query = Browse(
        search=q.strip().lower() or None,
        state=_choice("state", state, catalog.STATES),
        status=_choice("status", status_, catalog.CATALOG_STATUSES),
        server=_choice("server", server, [t.name for t in provisioner.servers]),
        version=_version(version),
        sort=_choice("sort", sort, _SORTS) or "id",
        descending=_choice("order", order, ("asc", "desc")) == "desc",
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    found, total = await provisioner.browse(query)
    return view.render(
        request,
        "tenants.html",
        role,
        query=query,
        rows=found,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        latest=provisioner.migrations.latest_version,
        states=catalog.STATES,
        statuses=catalog.CATALOG_STATUSES,
        servers=[t.name for t in provisioner.servers],
        versions=[m.version for m in provisioner.migrations.migrations],
        link=view.Links(request.query_params),
    )


@router.get("/tenants/{tenant_id}")
async def tenant(request: Request, role: ViewerDep, tenant_id: TenantIdPath, provisioner: ProvisionerDep) -> Response:
    """One tenant: its level, pending files, applied history, newest drift check, audit trail and actions."""
    found = await provisioner.get(tenant_id)
    level: SchemaStatus | None = None
    problem: str | None = None
    unread: str | None = None
    try:
        level = await provisioner.schema(tenant_id)
    except TenantNotReady:
        unread = f"The tenant is {found.state}: its schema cannot be read now."
    except ServiceError as exc:  # its server is down, its history cannot be read: the rest of the page still helps
        problem = f"Its level could not be read: {exc.message} ({exc.code})."
    events = await provisioner.events(tenant_id, 50)
    return view.render(
        request,
        "tenant.html",
        role,
        tenant=found,
        level=level,
        problem=problem,
        unread=unread,
        latest=provisioner.migrations.latest_version,
        events=events,
        json=view.compact,
    )


@router.get("/rollouts")
async def rollout_list(
    request: Request,
    role: ViewerDep,
    provisioner: ProvisionerDep,
    rollouts: RolloutsDep,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """Rollouts newest first, and (for an admin) the form that starts one."""
    found = await rollouts.page(before=before, limit=PAGE_SIZE + 1)
    return view.render(
        request,
        "rollouts.html",
        role,
        rollouts=found[:PAGE_SIZE],
        older=found[PAGE_SIZE - 1].id if len(found) > PAGE_SIZE else None,
        versions=[m.version for m in provisioner.migrations.migrations],
        latest=provisioner.migrations.latest_version,
        running=next((r for r in found if r.state == "running"), None),
    )


@router.get("/rollouts/{rollout_id}")
async def rollout(request: Request, role: ViewerDep, rollout_id: RolloutIdPath, rollouts: RolloutsDep) -> Response:
    """One rollout with each tenant's state (running and failed first, at most ``view.ROLLOUT_ROWS``); its script
    keeps it live while it runs."""
    found = await rollouts.get(rollout_id)
    return view.render(request, "rollout.html", role, rollout=found, items=view.rollout_rows(found.tenants))


@router.get("/login")
async def login(request: Request, next_: Annotated[str, Query(alias="next", max_length=200)] = "/ui") -> Response:
    """The token form (no data on it). Its script sends the token to ``POST /ui/session``, never in a URL."""
    return view.render(request, "login.html", "open", next=view.safe_next(next_), signing_in=True)


@router.post("/session", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def open_session(request: Request) -> Response:
    """Exchange the Bearer token for the console's cookie (see :mod:`.session`); 401 for an unknown token."""
    token = session.bearer(request)
    role = None if token is None else session.role_of_token(request.app.state.settings, token)
    if role is None:
        raise Unauthorized()
    response = Response(status_code=status.HTTP_204_NO_CONTENT, headers={"Cache-Control": "no-store"})
    session.issue(response, request, request.app.state.settings, role)
    return response


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def close_session(request: Request) -> Response:
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    session.clear(response, request)
    return response


async def login_required(request: Request, exc: Exception) -> Response:
    """Send a browser without a valid cookie to the token form, then back (the path only, never a token)."""
    path = exc.path if isinstance(exc, session.LoginRequired) else "/ui"
    return RedirectResponse(f"/ui/login?next={view.quote(path)}", status_code=status.HTTP_303_SEE_OTHER)


def _choice(name: str, value: str, allowed: Any) -> Any:
    """An empty form field filters nothing; an unknown value is a 422 naming the parameter."""
    if not value:
        return None
    if value not in allowed:
        raise InvalidRequest(f"unknown {name} {value!r}", parameter=name)
    return value


def _version(value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise InvalidRequest(f"version must be a number, not {value!r}", parameter="version")
    return int(value)
