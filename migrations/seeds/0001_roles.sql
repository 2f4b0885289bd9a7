INSERT INTO "roles" ("name", "description", "permissions", "is_system") VALUES
	('admin', 'Full access to the studio, its settings and its users', '["*"]'::jsonb, true),
	('manager', 'Runs the studio day to day: bookings, clients, projects, quotes and invoices', '["sessions:*", "clients:*", "projects:*", "quotes:*", "invoices:*", "payments:read", "equipment:*", "reports:read"]'::jsonb, true),
	('engineer', 'Runs sessions and works on projects and tracks', '["sessions:read", "sessions:update", "projects:read", "projects:update", "tracks:*", "files:*", "time_entries:*", "equipment:read"]'::jsonb, true),
	('assistant', 'Handles the calendar and client contacts', '["sessions:read", "sessions:create", "sessions:update", "clients:read", "clients:update", "equipment:read"]'::jsonb, true),
	('accountant', 'Handles quotes, invoices and payments', '["quotes:*", "invoices:*", "payments:*", "clients:read", "reports:read"]'::jsonb, true)
ON CONFLICT ("name") DO NOTHING;
