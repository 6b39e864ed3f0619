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
      AND p.proname NOT IN ('smsgw_node_login', 'smsgw_node_drop')  -- the provisioner's, below
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO smsgw_owner', o.kind, o.name);
  END LOOP;
END $$;

-- Edge nodes' database roles (docs/deployment.md, "Several sites"). The API
-- makes, re-keys and drops them through these two functions only; they run
-- as smsgw_provisioner, which cannot log in. So the API's own role can
-- create or alter no role, and the functions only ever touch a role named
-- smsgw_node_<id> that is a member of smsgw_worker (and so has exactly a
-- worker's grants, grants.sql). It needs INHERIT for pg_signal_backend, to
-- end a revoked node's sessions.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'smsgw_provisioner') THEN
    CREATE ROLE smsgw_provisioner NOLOGIN;
  END IF;
END $$;
ALTER ROLE smsgw_provisioner NOLOGIN NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
GRANT smsgw_worker TO smsgw_provisioner WITH ADMIN OPTION;
GRANT pg_signal_backend TO smsgw_provisioner;

-- Only a SCRAM verifier is taken, never a password: the password appears in
-- no statement, log or dump.
CREATE OR REPLACE FUNCTION public.smsgw_node_login(node_id integer, verifier text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  r text := 'smsgw_node_' || node_id;
BEGIN
  IF node_id IS NULL OR node_id < 1 THEN
    RAISE EXCEPTION 'smsgw_node_login: % is not a node id', node_id;
  END IF;
  IF verifier IS NULL OR verifier !~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
    RAISE EXCEPTION 'smsgw_node_login: a SCRAM-SHA-256 verifier is required';
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
    IF NOT pg_has_role(r, 'smsgw_worker', 'MEMBER') THEN
      RAISE EXCEPTION 'smsgw_node_login: role % exists and is not a node''s', r;
    END IF;
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', r, verifier);
  ELSE
    EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
                   'CONNECTION LIMIT 64 PASSWORD %L IN ROLE smsgw_worker', r, verifier);
  END IF;
  RETURN r;
END $fn$;

-- Revocation: no new session from the moment it commits, the open ones ended.
CREATE OR REPLACE FUNCTION public.smsgw_node_drop(node_id integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  r text := 'smsgw_node_' || node_id;
BEGIN
  IF node_id IS NULL OR node_id < 1 THEN
    RAISE EXCEPTION 'smsgw_node_drop: % is not a node id', node_id;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
    RETURN false;
  END IF;
  IF NOT pg_has_role(r, 'smsgw_worker', 'MEMBER') THEN
    RAISE EXCEPTION 'smsgw_node_drop: role % is not a node''s', r;
  END IF;
  PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = r;
  EXECUTE format('DROP ROLE %I', r);
  RETURN true;
END $fn$;

ALTER FUNCTION public.smsgw_node_login(integer, text) OWNER TO smsgw_provisioner;
ALTER FUNCTION public.smsgw_node_drop(integer) OWNER TO smsgw_provisioner;
REVOKE ALL ON FUNCTION public.smsgw_node_login(integer, text), public.smsgw_node_drop(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.smsgw_node_login(integer, text), public.smsgw_node_drop(integer) TO smsgw_api;
