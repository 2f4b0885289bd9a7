-- Control catalog, version 6: a tenant's life after creation: backups, restore, delete with undelete, move, drain.
ALTER TABLE tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('provisioning', 'ready', 'failed', 'deleting', 'deleted', 'restoring', 'moving'));
-- When it became 'deleted': it is purged TENANTS_DELETE_RETENTION later.
ALTER TABLE tenants ADD COLUMN deleted_at timestamptz;
-- The step in flight that cannot run in a catalog transaction (a restore, a move, a delete): written before the
-- step starts, updated before each part of it that touches a server, cleared when it is done. Recovery reads it to
-- finish or undo the step. Shape: {"op": "restore" | "move" | "delete", "stage": ..., ...}.
ALTER TABLE tenants ADD COLUMN step jsonb;

-- One row per backup file, inserted 'writing' before pg_dump starts: a row still 'writing' with the tenant's lock
-- free was interrupted, and recovery removes its file. `tenant_id` is not a foreign key: a deleted tenant's
-- backups are kept until it is purged.
CREATE TABLE backups (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL,
    state       text NOT NULL CHECK (state IN ('writing', 'complete')),
    version     integer,
    server      text NOT NULL,
    file        text NOT NULL,
    size_bytes  bigint,
    sha256      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backups_tenant_idx ON backups (tenant_id, created_at DESC, id DESC);

-- Servers an operator is draining: placement skips them and a drain moves their tenants away.
CREATE TABLE drains (
    server        text PRIMARY KEY,
    state         text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    concurrency   integer NOT NULL CHECK (concurrency > 0),
    max_failures  integer NOT NULL CHECK (max_failures >= 0),
    moved         integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    error         jsonb,
    actor         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
