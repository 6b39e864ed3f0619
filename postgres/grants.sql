-- Run by postgres/setup.py as the owner role, in one transaction, after the
-- migrations at every `up`: every service's privileges, from scratch. A table
-- a new migration adds is the API's (default privileges below and the
-- ALL TABLES grant); give it to a worker or the collector here, by name.
SELECT pg_advisory_xact_lock(727275);
SET LOCAL client_min_messages = warning;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM smsgw_api, smsgw_worker, smsgw_collector;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM smsgw_api, smsgw_worker, smsgw_collector;

-- API: the application's data, all of it (users, keys, messages, webhooks,
-- statistics); the schema version read-only; no DDL.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO smsgw_api;
REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM smsgw_api;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO smsgw_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO smsgw_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO smsgw_api;

-- Modem workers: the queue, the parts of what they send and receive, their
-- own modem and SIM rows (services/modem-worker, smsgw_common.queue).
-- Never users, api_keys, webhooks, opt_outs, statistics; logs append-only.
GRANT SELECT, INSERT, UPDATE ON messages, message_events, message_parts, modems, sim_cards TO smsgw_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON inbound_parts TO smsgw_worker;
-- What no decoder could read is kept before it leaves the SIM (worker/inbox.py).
GRANT SELECT, INSERT ON raw_inbound_pdus TO smsgw_worker;
-- A missed call is an audit row the worker appends; it reads no audit row
-- back (the ORM's INSERT ... RETURNING needs only the id).
GRANT INSERT ON logs TO smsgw_worker;
GRANT SELECT (id) ON logs TO smsgw_worker;

-- Stats collector: its samples and their retention (smsgw_stats/store.py).
GRANT SELECT, INSERT, DELETE ON stat_samples TO smsgw_collector;

-- The serial sequences of the tables a worker or the collector inserts into.
DO $$
DECLARE g record;
BEGIN
  FOR g IN
    SELECT DISTINCT s.oid::regclass AS seq, r.rolname AS role
    FROM pg_class s
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
    CROSS JOIN (VALUES ('smsgw_worker'), ('smsgw_collector')) AS r(rolname)
    WHERE s.relkind = 'S' AND has_table_privilege(r.rolname, t.oid, 'INSERT')
  LOOP
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', g.seq, g.role);
  END LOOP;
END $$;
