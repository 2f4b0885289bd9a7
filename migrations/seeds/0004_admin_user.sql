INSERT INTO "users" ("email", "first_name", "last_name", "is_active")
SELECT lower(btrim(current_setting('tenant.seed.admin_email', true))), 'Studio', 'Admin', true
WHERE NULLIF(btrim(current_setting('tenant.seed.admin_email', true)), '') IS NOT NULL
ON CONFLICT ("email") DO NOTHING;
--> statement-breakpoint
INSERT INTO "user_roles" ("user_id", "role_id")
SELECT "users"."id", "roles"."id"
FROM "users"
INNER JOIN "roles" ON "roles"."name" = 'admin'
WHERE NULLIF(btrim(current_setting('tenant.seed.admin_email', true)), '') IS NOT NULL
	AND "users"."email" = lower(btrim(current_setting('tenant.seed.admin_email', true)))
ON CONFLICT DO NOTHING;
