-- Control catalog, version 7: the tenants whose newest drift check found differences, found without reading every
-- check (the console's and /fleet's "drifted"): an index of the unclean checks only, a small part of the table.
CREATE INDEX drift_checks_unclean_idx ON drift_checks (tenant_id, id) WHERE NOT clean;
