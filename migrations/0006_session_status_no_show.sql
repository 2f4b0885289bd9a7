ALTER TYPE "public"."session_status" ADD VALUE 'no_show';
