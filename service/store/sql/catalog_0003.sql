-- Control catalog, version 3: each tenant's own login role (named like its database).
-- true from just before CREATE ROLE: only a role the catalog recorded as its own is ever dropped.
ALTER TABLE tenants ADD COLUMN role_owned boolean NOT NULL DEFAULT false;
