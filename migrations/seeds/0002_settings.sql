INSERT INTO "settings" ("key", "value", "description") VALUES
	('tenant.id', to_jsonb(NULLIF(current_setting('tenant.id'), '')), 'Identifier of the tenant this database belongs to'),
	('studio.name', to_jsonb(NULLIF(current_setting('tenant.name'), '')), 'Studio name shown in the app, on quotes and on invoices'),
	('studio.timezone', '"UTC"'::jsonb, 'IANA time zone used for the booking calendar'),
	('studio.locale', '"en"'::jsonb, 'Default language of documents and e-mails'),
	('billing.currency', '"EUR"'::jsonb, 'ISO 4217 currency code for quotes, invoices and payments'),
	('billing.default_tax_rate', '20'::jsonb, 'Default tax rate in percent applied to new line items'),
	('billing.invoice_prefix', '"INV-"'::jsonb, 'Prefix of invoice numbers'),
	('billing.quote_prefix', '"Q-"'::jsonb, 'Prefix of quote numbers'),
	('billing.payment_terms_days', '30'::jsonb, 'Days between the issue date and the due date of an invoice'),
	('booking.deposit_percentage', '30'::jsonb, 'Deposit asked at booking, in percent of the session total'),
	('booking.min_duration_minutes', '60'::jsonb, 'Shortest session that can be booked'),
	('booking.no_show_fee_percentage', '50'::jsonb, 'Fee charged for a no-show, in percent of the session total')
ON CONFLICT ("key") DO NOTHING;
