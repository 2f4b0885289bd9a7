-- Control catalog, version 10: a drain (and a rebalance) is a rollout of moves, driven by the rollout machinery
-- (one driver, one store: concurrency, failure budget, resume after a restart, per-tenant results), and a tenant
-- shows the error of its last failed operation.
ALTER TABLE rollouts ADD COLUMN kind text NOT NULL DEFAULT 'migrate'
    CHECK (kind IN ('migrate', 'drain', 'rebalance'));
-- The drained server (kind 'drain' only).
ALTER TABLE rollouts ADD COLUMN server text;
-- A rollout of moves has no target version.
ALTER TABLE rollouts ALTER COLUMN to_version DROP NOT NULL;
ALTER TABLE rollouts ADD CONSTRAINT rollouts_kind_fields_check
    CHECK ((kind = 'migrate') = (to_version IS NOT NULL) AND (kind = 'drain') = (server IS NOT NULL));
-- One running rollout per kind (and per drained server): migrations still run one at a time, while a server can be
-- drained during a migration (both take each tenant's lock, so they never touch one tenant at once).
DROP INDEX rollouts_one_running_idx;
CREATE UNIQUE INDEX rollouts_one_running_idx ON rollouts (kind, coalesce(server, '')) WHERE state = 'running';
-- Where a move went (a drain: chosen when it starts) or is to go (a rebalance: planned when the rollout starts).
ALTER TABLE rollout_tenants ADD COLUMN to_server text;

-- `drains` keeps only the mark placement reads (a row: the server takes no new tenants) and its latest drain.
ALTER TABLE drains ADD COLUMN rollout_id integer REFERENCES rollouts (id) ON DELETE SET NULL;
-- A drain in flight under the old driver goes on as a rollout of the tenants still on its server.
WITH r AS (
    INSERT INTO rollouts (kind, server, state, concurrency, canary, max_failures, actor, created_at)
    SELECT 'drain', server, 'running', concurrency, 0, max_failures, actor, created_at FROM drains
    WHERE state = 'running'
    RETURNING id, server
)
UPDATE drains SET rollout_id = r.id FROM r WHERE drains.server = r.server;
INSERT INTO rollout_tenants (rollout_id, position, tenant_id, canary)
SELECT d.rollout_id, row_number() OVER (PARTITION BY d.rollout_id ORDER BY t.id), t.id, false
FROM drains d JOIN tenants t ON t.server = d.server AND t.state IN ('ready', 'moving')
WHERE d.rollout_id IS NOT NULL;
ALTER TABLE drains DROP COLUMN state, DROP COLUMN concurrency, DROP COLUMN max_failures, DROP COLUMN moved,
    DROP COLUMN failed, DROP COLUMN error, DROP COLUMN finished_at;

-- The error of the tenant's last failed operation ({"op", "code", "message", ..., "at"}), cleared by the next one
-- that succeeds: a background move or backup that failed says why where an operator looks (GET /tenants/{id}).
ALTER TABLE tenants ADD COLUMN last_error jsonb;
