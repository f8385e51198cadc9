-- refsync's reference tables, each with the four tracking columns (Story 6.2.2): the SQL
-- `refsync init-db --create-tables` applies to PostgreSQL for a table that does not exist,
-- as printed by `refsync init-db --print-sql`. Idempotent: run again, it only adds what is
-- missing (a tracking column, an index).
--
--   psql "$WDH_DATABASE_URL" -v ON_ERROR_STOP=1 -f reference_tables.sql

BEGIN;
SET LOCAL client_min_messages = warning;  -- no 'already exists, skipping' notices

CREATE SCHEMA IF NOT EXISTS "business";

CREATE TABLE IF NOT EXISTS "business"."年金计划" (
    "年金计划号" varchar(20) NOT NULL,
    "计划名称" varchar(255),
    "计划类型" varchar(50),
    "客户名称" varchar(255),
    "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
    "_needs_review" boolean NOT NULL DEFAULT false,
    "_derived_from_domain" varchar(50),
    "_derived_at" timestamp with time zone,
    CONSTRAINT "年金计划_pkey" PRIMARY KEY ("年金计划号")
);
ALTER TABLE "business"."年金计划" ADD COLUMN IF NOT EXISTS "_source" varchar(20) NOT NULL DEFAULT 'authoritative';
ALTER TABLE "business"."年金计划" ADD COLUMN IF NOT EXISTS "_needs_review" boolean NOT NULL DEFAULT false;
ALTER TABLE "business"."年金计划" ADD COLUMN IF NOT EXISTS "_derived_from_domain" varchar(50);
ALTER TABLE "business"."年金计划" ADD COLUMN IF NOT EXISTS "_derived_at" timestamp with time zone;
CREATE INDEX IF NOT EXISTS "ix_年金计划_needs_review" ON "business"."年金计划" ("_derived_from_domain") WHERE "_needs_review";

CREATE TABLE IF NOT EXISTS "business"."组合计划" (
    "组合代码" varchar(20) NOT NULL,
    "年金计划号" varchar(20),
    "组合名称" varchar(255),
    "组合类型" varchar(50),
    "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
    "_needs_review" boolean NOT NULL DEFAULT false,
    "_derived_from_domain" varchar(50),
    "_derived_at" timestamp with time zone,
    CONSTRAINT "组合计划_pkey" PRIMARY KEY ("组合代码")
);
ALTER TABLE "business"."组合计划" ADD COLUMN IF NOT EXISTS "_source" varchar(20) NOT NULL DEFAULT 'authoritative';
ALTER TABLE "business"."组合计划" ADD COLUMN IF NOT EXISTS "_needs_review" boolean NOT NULL DEFAULT false;
ALTER TABLE "business"."组合计划" ADD COLUMN IF NOT EXISTS "_derived_from_domain" varchar(50);
ALTER TABLE "business"."组合计划" ADD COLUMN IF NOT EXISTS "_derived_at" timestamp with time zone;
CREATE INDEX IF NOT EXISTS "ix_组合计划_needs_review" ON "business"."组合计划" ("_derived_from_domain") WHERE "_needs_review";
CREATE INDEX IF NOT EXISTS "ix_组合计划_年金计划号" ON "business"."组合计划" ("年金计划号");

CREATE TABLE IF NOT EXISTS "business"."组织架构" (
    "组织代码" varchar(20) NOT NULL,
    "组织名称" varchar(255),
    "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
    "_needs_review" boolean NOT NULL DEFAULT false,
    "_derived_from_domain" varchar(50),
    "_derived_at" timestamp with time zone,
    CONSTRAINT "组织架构_pkey" PRIMARY KEY ("组织代码")
);
ALTER TABLE "business"."组织架构" ADD COLUMN IF NOT EXISTS "_source" varchar(20) NOT NULL DEFAULT 'authoritative';
ALTER TABLE "business"."组织架构" ADD COLUMN IF NOT EXISTS "_needs_review" boolean NOT NULL DEFAULT false;
ALTER TABLE "business"."组织架构" ADD COLUMN IF NOT EXISTS "_derived_from_domain" varchar(50);
ALTER TABLE "business"."组织架构" ADD COLUMN IF NOT EXISTS "_derived_at" timestamp with time zone;
CREATE INDEX IF NOT EXISTS "ix_组织架构_needs_review" ON "business"."组织架构" ("_derived_from_domain") WHERE "_needs_review";

CREATE TABLE IF NOT EXISTS "business"."产品线" (
    "产品线代码" varchar(20) NOT NULL,
    "产品线名称" varchar(100),
    "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
    "_needs_review" boolean NOT NULL DEFAULT false,
    "_derived_from_domain" varchar(50),
    "_derived_at" timestamp with time zone,
    CONSTRAINT "产品线_pkey" PRIMARY KEY ("产品线代码")
);
ALTER TABLE "business"."产品线" ADD COLUMN IF NOT EXISTS "_source" varchar(20) NOT NULL DEFAULT 'authoritative';
ALTER TABLE "business"."产品线" ADD COLUMN IF NOT EXISTS "_needs_review" boolean NOT NULL DEFAULT false;
ALTER TABLE "business"."产品线" ADD COLUMN IF NOT EXISTS "_derived_from_domain" varchar(50);
ALTER TABLE "business"."产品线" ADD COLUMN IF NOT EXISTS "_derived_at" timestamp with time zone;
CREATE INDEX IF NOT EXISTS "ix_产品线_needs_review" ON "business"."产品线" ("_derived_from_domain") WHERE "_needs_review";

COMMIT;
