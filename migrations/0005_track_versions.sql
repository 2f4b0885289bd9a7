CREATE TYPE "public"."track_version_stage" AS ENUM('demo', 'rough_mix', 'mix', 'master', 'final');
--> statement-breakpoint
CREATE TABLE "track_versions" (
	"id" serial PRIMARY KEY NOT NULL,
	"track_id" integer NOT NULL,
	"version_number" integer NOT NULL,
	"stage" "track_version_stage" DEFAULT 'demo' NOT NULL,
	"label" varchar(100),
	"file_id" uuid,
	"notes" text,
	"is_approved" boolean DEFAULT false NOT NULL,
	"approved_at" timestamp with time zone,
	"created_by" integer,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "track_versions_track_id_version_number_unique" UNIQUE("track_id","version_number"),
	CONSTRAINT "track_versions_version_number_check" CHECK ("track_versions"."version_number" > 0)
);
--> statement-breakpoint
ALTER TABLE "track_versions" ADD CONSTRAINT "track_versions_track_id_tracks_id_fk" FOREIGN KEY ("track_id") REFERENCES "public"."tracks"("id") ON DELETE cascade ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "track_versions" ADD CONSTRAINT "track_versions_file_id_files_id_fk" FOREIGN KEY ("file_id") REFERENCES "public"."files"("id") ON DELETE set null ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "track_versions" ADD CONSTRAINT "track_versions_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;
--> statement-breakpoint
CREATE INDEX "track_versions_file_id_idx" ON "track_versions" USING btree ("file_id");
