CREATE TABLE "session_cancellations" (
	"id" serial PRIMARY KEY NOT NULL,
	"session_id" integer NOT NULL,
	"kind" "session_status" DEFAULT 'no_show' NOT NULL,
	"reason" text,
	"recorded_by" integer,
	"fee_amount" numeric(10, 2) DEFAULT '0' NOT NULL,
	"fee_waived" boolean DEFAULT false NOT NULL,
	"recorded_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "session_cancellations_session_id_unique" UNIQUE("session_id"),
	CONSTRAINT "session_cancellations_kind_check" CHECK ("session_cancellations"."kind" IN ('cancelled', 'no_show')),
	CONSTRAINT "session_cancellations_fee_amount_check" CHECK ("session_cancellations"."fee_amount" >= 0)
);
--> statement-breakpoint
ALTER TABLE "session_cancellations" ADD CONSTRAINT "session_cancellations_session_id_sessions_id_fk" FOREIGN KEY ("session_id") REFERENCES "public"."sessions"("id") ON DELETE cascade ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "session_cancellations" ADD CONSTRAINT "session_cancellations_recorded_by_users_id_fk" FOREIGN KEY ("recorded_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;
--> statement-breakpoint
CREATE INDEX "sessions_client_id_no_show_idx" ON "sessions" USING btree ("client_id","start_time") WHERE "sessions"."status" = 'no_show';
