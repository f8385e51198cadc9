-- The demo's legacy tables in SQLite, shaped like the legacy MySQL ones (bench/gen_mysql.py).
-- The VARCHAR(n) declarations carry the legacy lengths (= DEMO_TARGET_TYPES), so a target
-- created from the reflected source types gets them. `updated_at` is declared DATETIME, so
-- it reflects as a date-time (as MySQL's does), but SQLite stores it as the text
-- 'YYYY-MM-DD HH:MM:SS' (the Asia/Shanghai wall clock, no zone).
CREATE TABLE annuity_plan (
    plan_code VARCHAR(20) PRIMARY KEY,
    plan_name VARCHAR(255),
    plan_type VARCHAR(50),
    customer_name VARCHAR(255),
    updated_at DATETIME
);
CREATE TABLE portfolio_plan (
    portfolio_code VARCHAR(20) PRIMARY KEY,
    plan_code VARCHAR(20),
    portfolio_name VARCHAR(255),
    portfolio_type VARCHAR(50),
    updated_at DATETIME
);
CREATE TABLE organization (
    org_code VARCHAR(20) PRIMARY KEY,
    org_name VARCHAR(255),
    updated_at DATETIME
);
CREATE INDEX ix_annuity_plan_updated_at ON annuity_plan (updated_at);
CREATE INDEX ix_portfolio_plan_updated_at ON portfolio_plan (updated_at);
CREATE INDEX ix_organization_updated_at ON organization (updated_at);
