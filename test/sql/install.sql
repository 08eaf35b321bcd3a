-- What CREATE EXTENSION installs, and that nothing of it is open to PUBLIC.
\dx+ flyt_instance

-- Every function: volatility, strictness and security.
SELECT p.oid::regprocedure AS function, p.provolatile, p.proisstrict, p.prosecdef, p.proconfig
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flyt_instance'
ORDER BY p.oid::regprocedure::text;

-- PUBLIC can neither use the schema nor run any function.
SELECT has_schema_privilege('public', 'flyt', 'USAGE') AS public_uses_schema;
SELECT count(*) AS functions_executable_by_public
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'flyt_instance'
WHERE has_function_privilege('public', p.oid, 'EXECUTE');

-- Tables and their storage options (the outbox is tuned for churn).
SELECT c.relname, c.reloptions
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'flyt' AND c.relkind = 'r'
ORDER BY 1;

-- Indexes.
SELECT indexrelid::regclass AS index, pg_get_indexdef(indexrelid) AS definition
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'flyt'
ORDER BY indexrelid::regclass::text;

-- User data is dumped by pg_dump: every table is an extension configuration table.
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension WHERE extname = 'flyt_instance' ORDER BY 1;
