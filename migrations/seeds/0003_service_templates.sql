INSERT INTO "service_templates" ("name", "description", "category", "unit", "unit_price", "tax_rate", "sort_order") VALUES
	('Studio time with engineer', 'Recording room and an engineer, billed per hour', 'recording', 'hour', '85.00', '20', 10),
	('Studio day (10 hours)', 'Ten hours of studio time with an engineer', 'recording', 'day', '750.00', '20', 20),
	('Dry hire', 'Room without an engineer, billed per hour', 'recording', 'hour', '45.00', '20', 30),
	('Mixing', 'Mix of one track, two revisions included', 'mixing', 'track', '250.00', '20', 40),
	('Mix revision', 'Additional mix revision beyond those included', 'mixing', 'revision', '50.00', '20', 50),
	('Mastering', 'Mastering of one track for streaming and CD', 'mastering', 'track', '60.00', '20', 60),
	('Stem mastering', 'Mastering of one track from stems', 'mastering', 'track', '90.00', '20', 70),
	('Editing and comping', 'Vocal or instrument editing and comping, billed per hour', 'editing', 'hour', '55.00', '20', 80),
	('Vocal tuning', 'Pitch and timing correction of one lead vocal', 'editing', 'track', '40.00', '20', 90),
	('Session musician', 'Session player, billed per hour', 'musicians', 'hour', '60.00', '20', 100),
	('Backup and archive', 'Delivery of the multitracks and one year of archiving', 'delivery', 'project', '30.00', '20', 110),
	('Rush fee', 'Delivery within 48 hours', 'other', 'project', '100.00', '20', 120)
ON CONFLICT ("name") DO NOTHING;
