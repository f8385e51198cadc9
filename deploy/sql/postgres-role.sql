-- The PostgreSQL role refsync connects as, and what it may do in the warehouse database.
-- Run once, as a superuser or the database's owner, connected to the warehouse database:
--
--   psql -d warehouse -v ON_ERROR_STOP=1 -v role=refsync -v password='…' \
--        -v schema=business -f deploy/sql/postgres-role.sql
--
-- `schema` is the tables' target_schema (run once per schema, with a new role only the
-- first time). The role may then: keep its state tables in schema refsync, which it owns
-- (`init-db`, and adding the columns a new release brings); create missing target tables
-- (`init-db --create-tables`: CREATE on the target schema); read and write the target
-- tables others made (refsync's own are its own); and stage rows in temporary tables
-- (TEMPORARY). No CREATE on the database: with its schemas in place refsync runs no DDL
-- beyond temporary tables. The least a role needs is listed in README.md ("Privileges").
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE SCHEMA IF NOT EXISTS refsync AUTHORIZATION :"role";
CREATE SCHEMA IF NOT EXISTS :"schema";
GRANT USAGE, CREATE ON SCHEMA :"schema" TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"role";
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'role')
\gexec
