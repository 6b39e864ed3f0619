-- Run by postgres/setup.py as the superuser, in one transaction, at every `up`.
-- :'x' is a literal and :"x" an identifier, filled in by setup.py.
-- One login role per service; none may create roles, databases or bypass RLS.
SELECT pg_advisory_xact_lock(727274);  -- two setups at once wait for each other
SET LOCAL client_min_messages = warning;

DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['smsgw_owner', 'smsgw_api', 'smsgw_worker', 'smsgw_collector'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', r);
    END IF;
  END LOOP;
END $$;

ALTER ROLE smsgw_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'smsgw_owner_password';
ALTER ROLE smsgw_api LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
  PASSWORD :'smsgw_api_password';
ALTER ROLE smsgw_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
  PASSWORD :'smsgw_worker_password';
ALTER ROLE smsgw_collector LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
  PASSWORD :'smsgw_collector_password';

-- Only these roles (and the superuser) may connect; nobody else may create
-- objects in public but the owner.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO smsgw_owner, smsgw_api, smsgw_worker, smsgw_collector;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO smsgw_owner;
GRANT USAGE ON SCHEMA public TO smsgw_api, smsgw_worker, smsgw_collector;

-- An existing volume (from before per-service roles, or a restored dump made
-- with --no-owner) has its objects owned by the superuser: hand them over, so
-- the next migration, run as the owner, may alter them.
DO $$
DECLARE o record;
BEGIN
  FOR o IN
    SELECT c.oid::regclass AS name,
           CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND c.relowner <> 'smsgw_owner'::regrole
      -- a serial's sequence follows its table
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype IN ('a', 'i') AND c.relkind = 'S')
    ORDER BY c.relkind <> 'r'
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO smsgw_owner', o.kind, o.name);
  END LOOP;
  FOR o IN
    SELECT t.oid::regtype AS name, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kind
    FROM pg_type t
    JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = 'public' AND t.typowner <> 'smsgw_owner'::regrole
      AND (t.typtype IN ('e', 'd', 'r')
           OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO smsgw_owner', o.kind, o.name);
  END LOOP;
  FOR o IN
    SELECT p.oid::regprocedure AS name, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END AS kind
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public' AND p.proowner <> 'smsgw_owner'::regrole AND p.prokind IN ('f', 'p')
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO smsgw_owner', o.kind, o.name);
  END LOOP;
END $$;
