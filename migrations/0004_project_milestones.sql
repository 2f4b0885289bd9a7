CREATE TABLE "project_milestones" (
	"id" serial PRIMARY KEY NOT NULL,
	"project_id" integer NOT NULL,
	"title" varchar(255) NOT NULL,
	"description" text,
	"due_date" date,
	"completed_at" timestamp with time zone,
	"amount" numeric(10, 2),
	"invoice_id" integer,
	"sort_order" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "project_milestones_amount_check" CHECK ("project_milestones"."amount" >= 0)
);
--> statement-breakpoint
ALTER TABLE "project_milestones" ADD CONSTRAINT "project_milestones_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "project_milestones" ADD CONSTRAINT "project_milestones_invoice_id_invoices_id_fk" FOREIGN KEY ("invoice_id") REFERENCES "public"."invoices"("id") ON DELETE set null ON UPDATE no action;
--> statement-breakpoint
CREATE INDEX "project_milestones_project_id_sort_order_idx" ON "project_milestones" USING btree ("project_id","sort_order");
--> statement-breakpoint
CREATE INDEX "project_milestones_open_due_date_idx" ON "project_milestones" USING btree ("due_date") WHERE "project_milestones"."completed_at" IS NULL;
