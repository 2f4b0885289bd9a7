CREATE TYPE "public"."session_payment_status" AS ENUM('unpaid', 'pending', 'deposit_paid', 'paid', 'refunded', 'failed');
--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "deposit_amount" numeric(10, 2);
--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "deposit_paid" boolean DEFAULT false NOT NULL;
--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "payment_status" "session_payment_status" DEFAULT 'unpaid' NOT NULL;
--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "stripe_checkout_session_id" varchar(255);
--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "stripe_payment_intent_id" varchar(255);
--> statement-breakpoint
ALTER TABLE "sessions" ADD CONSTRAINT "sessions_deposit_amount_check" CHECK ("sessions"."deposit_amount" >= 0);
--> statement-breakpoint
CREATE UNIQUE INDEX "sessions_stripe_checkout_session_id_idx" ON "sessions" USING btree ("stripe_checkout_session_id");
--> statement-breakpoint
CREATE INDEX "sessions_stripe_payment_intent_id_idx" ON "sessions" USING btree ("stripe_payment_intent_id");
