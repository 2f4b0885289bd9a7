-- Control catalog, version 4: fleet rollouts (POST /rollouts) and the state of each tenant in one.
-- A rollout is driven by whichever process holds its session advisory lock; everything it needs to resume after
-- that process dies is here: an item is marked 'running' before its tenant is touched, so an item found 'running'
-- with the lock free was interrupted and is run again (migrate is idempotent and transactional per batch).
CREATE TABLE rollouts (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state             text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    to_version        integer NOT NULL,
    concurrency       integer NOT NULL CHECK (concurrency > 0),
    canary            integer NOT NULL CHECK (canary >= 0),
    max_failures      integer NOT NULL CHECK (max_failures >= 0),
    actor             text NOT NULL,
    -- Set by POST /rollouts/{id}/cancel on any replica; the driver reads it before starting each tenant.
    cancel_requested  boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
-- One running rollout at a time, across replicas: two at once would race for the same tenants to other targets.
CREATE UNIQUE INDEX rollouts_one_running_idx ON rollouts ((state)) WHERE state = 'running';

CREATE TABLE rollout_tenants (
    rollout_id    integer NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    -- Run order: canaries are the first `canary` positions.
    position      integer NOT NULL,
    tenant_id     text NOT NULL,
    canary        boolean NOT NULL,
    from_version  integer,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    attempts      integer NOT NULL DEFAULT 0,
    started_at    timestamptz,
    finished_at   timestamptz,
    duration_ms   double precision,
    error         jsonb,
    PRIMARY KEY (rollout_id, tenant_id),
    UNIQUE (rollout_id, position)
);
