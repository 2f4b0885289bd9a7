-- Control catalog, version 5: several database servers (TENANTS_SERVERS). A tenant's server is fixed when it is
-- created (or adopted); rows made before servers existed live on the one server there was, named 'default'.
ALTER TABLE tenants ADD COLUMN server text NOT NULL DEFAULT 'default';
-- A database is known by its server and its name: two servers may each hold a database of the same name (an
-- adopted one), so the name alone is no longer unique. Leading `server` also serves the per-server counts that
-- placement takes under its lock.
CREATE UNIQUE INDEX tenants_server_database_idx ON tenants (server, database);
ALTER TABLE tenants DROP CONSTRAINT tenants_database_key;
