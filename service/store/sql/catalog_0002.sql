-- Control catalog, version 2: schema drift checks, and the expected schema of each migration version.

-- One row per drift check of a tenant (GET /tenants/{id}/drift, a migration run, a sweep); the newest row is the
-- tenant's drift status. A tenant's checks go with it.
CREATE TABLE drift_checks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version      integer,
    checked_at   timestamptz NOT NULL DEFAULT now(),
    clean        boolean NOT NULL,
    differences  jsonb NOT NULL
);
CREATE INDEX drift_checks_tenant_idx ON drift_checks (tenant_id, id DESC);

-- The snapshot a tenant at `version` must have, built by replaying the files into a scratch database. `key` hashes
-- the files 0000..version with the snapshot format and the server version, so an edited file, a new format or a
-- server upgrade simply misses the cache; rows under old keys are inert.
CREATE TABLE expected_schemas (
    key         text PRIMARY KEY,
    version     integer,
    snapshot    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
