-- Control catalog, version 1: tenants and the operations run on them.
CREATE TABLE tenants (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    database        text NOT NULL UNIQUE,
    state           text NOT NULL CHECK (state IN ('provisioning', 'ready', 'failed', 'deleting')),
    -- sha256 of the canonical create request: a replay with the same body is idempotent.
    request_sha256  text NOT NULL,
    -- true from just before CREATE DATABASE: only a database the catalog recorded as its own is ever dropped.
    database_owned  boolean NOT NULL DEFAULT false,
    version         integer,
    error           jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_state_idx ON tenants (state, id);
CREATE INDEX tenants_version_idx ON tenants (version);

CREATE TABLE operations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text NOT NULL,
    kind         text NOT NULL,
    actor        text NOT NULL,
    state        text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    detail       jsonb,
    error        jsonb
);
CREATE INDEX operations_tenant_idx ON operations (tenant_id, id);
