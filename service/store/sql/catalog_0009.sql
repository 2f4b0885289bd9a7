-- Control catalog, version 9: the queue of asynchronous creations (POST /tenants with Prefer: respond-async).
-- A tenant is `queued` from its 202 until a worker of any replica takes its lock and starts it (`provisioning`).
ALTER TABLE tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('queued', 'provisioning', 'ready', 'failed', 'deleting', 'deleted', 'restoring', 'moving'));

CREATE TABLE create_queue (
    tenant_id     text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- Queue order (first come, first served) and the position GET /tenants/{id} shows.
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- The request: {"name", "seed", "strategy"}.
    request       jsonb NOT NULL,
    -- SCRAM verifier of the password the 202 answered (as pg_authid would keep it, never the password): the worker
    -- makes the role with it. Deleted with the row once the tenant is ready or failed.
    role_verifier text NOT NULL,
    -- Starts so far; recovery puts an interrupted one back in the queue until TENANTS_QUEUE_ATTEMPTS.
    attempts      integer NOT NULL DEFAULT 0,
    queued_at     timestamptz NOT NULL DEFAULT now()
);
