-- A tenant database's own record of its level: the source of truth, read live by the schema endpoint.
CREATE SCHEMA IF NOT EXISTS _tenants;
CREATE TABLE IF NOT EXISTS _tenants.history (
    version       integer PRIMARY KEY,
    name          text NOT NULL,
    file          text NOT NULL,
    sha256        text NOT NULL,
    drizzle_hash  text NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms   double precision NOT NULL,
    how           text NOT NULL DEFAULT 'applied' CHECK (how IN ('applied', 'baselined', 'cloned'))
);
CREATE TABLE IF NOT EXISTS _tenants.seeds (
    file          text PRIMARY KEY,
    sha256        text NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms   double precision NOT NULL
);
-- An operator's acceptance of an applied file as it now reads (POST /tenants/{id}/repair). Append-only, like
-- history: a history row keeps the hash of the SQL that actually ran, and the newest repair of a version gives
-- the hash its file is compared with from then on. Tenants migrated before this table existed get it on their
-- next migrate or repair; readers treat a missing table as "no repairs".
CREATE TABLE IF NOT EXISTS _tenants.repairs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version       integer NOT NULL REFERENCES _tenants.history (version),
    old_sha256    text NOT NULL,
    new_sha256    text NOT NULL,
    accepted_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A file's identity in the tool that wrote its folder (golang-migrate, flyway, dbmate, goose, prisma) and its
-- version there; NULL for NNNN and Drizzle folders. Readers take them through to_jsonb, so a table from before
-- these columns reads as NULL.
ALTER TABLE _tenants.history ADD COLUMN IF NOT EXISTS tool text, ADD COLUMN IF NOT EXISTS tool_version text;
-- A file that runs in parts (its own COMMIT, or outside any transaction) while it is unfinished: the last part
-- and statement committed. A row here means the file is half-applied: status names it, and the next migrate
-- resumes after that statement. The row goes when the file's history row comes, in the same transaction.
CREATE TABLE IF NOT EXISTS _tenants.progress (
    version       integer PRIMARY KEY,
    file          text NOT NULL,
    sha256        text NOT NULL,
    part          integer NOT NULL,
    parts         integer NOT NULL,
    statement     integer NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
