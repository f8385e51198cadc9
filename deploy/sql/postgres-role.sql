-- The PostgreSQL role refsync connects as, and what it may do in the warehouse database.
-- Run once, as a superuser or the database's owner, connected to the warehouse database:
--
--   psql -d warehouse -v ON_ERROR_STOP=1 -v role=refsync -v password='…' \
--        -v schema=business -f deploy/sql/postgres-role.sql
--
-- `schema` is the tables' target_schema (run once per schema, with a new role only the
-- first time). The role may then: keep its state tables in schema refsync, which it owns;
-- create missing target tables (`init-db --create-tables`: CREATE on the target schema);
-- read and write the target tables others made (refsync's own are its own); stage rows in
-- temporary tables (TEMPORARY); and run `CREATE SCHEMA IF NOT EXISTS refsync`, for which
-- PostgreSQL asks CREATE on the database even when the schema exists.
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE SCHEMA IF NOT EXISTS refsync AUTHORIZATION :"role";
CREATE SCHEMA IF NOT EXISTS :"schema";
GRANT USAGE, CREATE ON SCHEMA :"schema" TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"role";
SELECT format('GRANT CREATE, TEMPORARY ON DATABASE %I TO %I', current_database(), :'role')
\gexec
