-- Control catalog, version 8: what an adopted database allowed before adoption ({"tenants_schema", "public_connect",
-- "public_create"}), so that DELETE gives it back as it was (service/tenants/unadopt.py); NULL for tenants made here.
ALTER TABLE tenants ADD COLUMN adoption jsonb;
