CREATE TYPE "public"."maintenance_type" AS ENUM('inspection', 'repair', 'calibration', 'cleaning', 'replacement');
--> statement-breakpoint
CREATE TABLE "equipment_maintenance" (
	"id" serial PRIMARY KEY NOT NULL,
	"equipment_id" integer NOT NULL,
	"type" "maintenance_type" NOT NULL,
	"description" text NOT NULL,
	"performed_by" integer,
	"vendor" varchar(255),
	"cost" numeric(10, 2) DEFAULT '0' NOT NULL,
	"scheduled_for" date,
	"performed_at" timestamp with time zone,
	"next_due_on" date,
	"notes" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "equipment_maintenance_cost_check" CHECK ("equipment_maintenance"."cost" >= 0),
	CONSTRAINT "equipment_maintenance_when_check" CHECK ("equipment_maintenance"."scheduled_for" IS NOT NULL OR "equipment_maintenance"."performed_at" IS NOT NULL)
);
--> statement-breakpoint
ALTER TABLE "equipment" ADD COLUMN "last_maintenance_at" timestamp with time zone;
--> statement-breakpoint
ALTER TABLE "equipment_maintenance" ADD CONSTRAINT "equipment_maintenance_equipment_id_equipment_id_fk" FOREIGN KEY ("equipment_id") REFERENCES "public"."equipment"("id") ON DELETE cascade ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "equipment_maintenance" ADD CONSTRAINT "equipment_maintenance_performed_by_users_id_fk" FOREIGN KEY ("performed_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;
--> statement-breakpoint
CREATE INDEX "equipment_maintenance_equipment_id_idx" ON "equipment_maintenance" USING btree ("equipment_id");
--> statement-breakpoint
CREATE INDEX "equipment_maintenance_next_due_on_idx" ON "equipment_maintenance" USING btree ("next_due_on");
