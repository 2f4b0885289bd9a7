ALTER TABLE "invoices" ADD COLUMN "deposit_amount" numeric(10, 2);
--> statement-breakpoint
ALTER TABLE "invoices" ADD COLUMN "deposit_paid_at" timestamp with time zone;
--> statement-breakpoint
ALTER TABLE "invoices" ADD COLUMN "stripe_deposit_payment_intent_id" varchar(255);
--> statement-breakpoint
ALTER TABLE "invoices" ADD COLUMN "remaining_balance" numeric(10, 2);
--> statement-breakpoint
ALTER TABLE "invoices" ADD COLUMN "pdf_s3_key" varchar(500);
--> statement-breakpoint
ALTER TABLE "invoices" ADD COLUMN "sent_at" timestamp with time zone;
