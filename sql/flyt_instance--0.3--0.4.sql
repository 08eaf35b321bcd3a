/* flyt_instance 0.3 -> 0.4: the original services' wire contract, authorisation and provisioning (issue 11). */

\echo Use "ALTER EXTENSION flyt_instance UPDATE TO '0.4'" to load this file. \quit

-------------------------------------------------------------------------------
-- The wire contract of the original services (INTEROP.md section 5)
-------------------------------------------------------------------------------

COMMENT ON COLUMN flyt.outbox.headers IS 'Kafka headers as a JSON object of header name to the exact header value (UTF-8 text): flyt.instance-flow-headers and flyt.event-id; the worker adds origin.application.id and __TypeId__ when it sends';

COMMENT ON FUNCTION flyt_instance_dispatched(jsonb) IS
'Delete the instance named by headers.instanceId after it was dispatched; false when it was already gone
Records DISPATCHED and DELETED when it existed, and queues instance-deleted with these headers either way, as the original does.';

-- The flyt.instance-flow-headers header as the original writes it (Jackson's
-- InstanceFlowHeaders: nine fields in order, nulls written); the set-based
-- cleanup uses it.
CREATE FUNCTION flyt.wire_flow_headers(jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_wire_flow_headers'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION flyt.wire_flow_headers(jsonb) IS
'The flyt.instance-flow-headers text flyt_instance writes on the wire for stored flow headers (internal)';
REVOKE EXECUTE ON FUNCTION flyt.wire_flow_headers(jsonb) FROM PUBLIC;

-- Rows queued by 0.3 hold their flow headers as they arrived; what 0.4
-- queues holds them as the original writes them.  Rewrite the waiting
-- rows, so that every record sent from now on has the original's form.
UPDATE flyt.outbox
SET headers = headers OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
		'flyt.instance-flow-headers',
		flyt.wire_flow_headers((headers OPERATOR(pg_catalog.->>) 'flyt.instance-flow-headers')::pg_catalog.jsonb))
WHERE headers OPERATOR(pg_catalog.?) 'flyt.instance-flow-headers';

-- Error events queued by 0.3 carry "args":{}; the original writes null.
UPDATE flyt.outbox
SET value = pg_catalog.replace(value, '"args":{}', '"args":null')
WHERE event_name IN ('instance-registration-error', 'instance-retry-request-error');

-------------------------------------------------------------------------------
-- Authorisation as the original's resource server (INTEROP.md section 6):
-- user tokens only (organizationid and objectidentifier required, exact
-- role-catalog URLs, the organisation's roles filter before the hierarchy);
-- JWT subjects ("internal clients") no longer open the API, and the setting
-- flyt_instance.internal_clients is gone.
-------------------------------------------------------------------------------

COMMENT ON SCHEMA flyt_api IS
$$FINT Flyt instance service
Retry instances of the FINT Flyt flow. Callers authenticate with a user's
bearer token from FINT's identity provider, with claims organizationid,
objectidentifier and roles (role-catalog URLs). Of the token's roles only
those its organisation is authorised for count; DEVELOPER implies ADMIN,
ADMIN implies USER, and the API needs USER.$$;

COMMENT ON FUNCTION flyt_api.authorize() IS
$$Check the caller's token (PostgREST's db-pre-request)
401 without a token, or when its organizationid or objectidentifier claim is
missing or blank. 403 when flyt_instance.authorized_org_id_role_pairs does not
list its organisation, or when it grants no USER: the token's roles (exactly
https://role-catalog.vigoiks.no/vigo/flyt/user, .../admin, .../developer) are
first filtered by the roles listed for the organisation, then DEVELOPER implies
ADMIN and ADMIN implies USER. The JWT subject opens nothing.$$;

-------------------------------------------------------------------------------
-- Import from the Java fint-flyt-instance-service (issue 12).
--
-- CALL flyt_import_legacy('<schema>') reads the Java service's tables
-- (instance_object, instance_object_collection, instance_object_value_per_key
-- and, when present, instance_object_id_seq) from a schema of this database
-- and records each run in flyt.import_run and what it left out in
-- flyt.import_skipped.  docs/cutover.md is the runbook.
-------------------------------------------------------------------------------

-- Imported instances get an IMPORTED history row.
ALTER TABLE flyt.instance_event DROP CONSTRAINT instance_event_type_check;
ALTER TABLE flyt.instance_event ADD CONSTRAINT instance_event_type_check
	CHECK (event_type IN ('REGISTERED', 'RETRY_REQUESTED', 'RETRY_FAILED', 'DISPATCHED', 'DELETED', 'IMPORTED'));

CREATE TABLE flyt.import_run (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source_schema text NOT NULL,
	batch_size integer NOT NULL,
	backend_pid integer NOT NULL DEFAULT pg_backend_pid(),
	started_at timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz,
	status text NOT NULL DEFAULT 'running',
	roots_in_source bigint NOT NULL DEFAULT 0,
	roots_done bigint NOT NULL DEFAULT 0,
	roots_imported bigint NOT NULL DEFAULT 0,
	roots_already_imported bigint NOT NULL DEFAULT 0,
	roots_skipped bigint NOT NULL DEFAULT 0,
	objects_imported bigint NOT NULL DEFAULT 0,
	collections_imported bigint NOT NULL DEFAULT 0,
	values_imported bigint NOT NULL DEFAULT 0,
	rows_skipped bigint NOT NULL DEFAULT 0,
	source_sequence_value bigint,
	max_source_id bigint,
	ids_continue_above bigint,
	last_root_id bigint,
	CONSTRAINT import_run_status_check CHECK (status IN ('running', 'succeeded', 'interrupted'))
);
COMMENT ON TABLE flyt.import_run IS 'One row per CALL flyt_import_legacy: the source, progress (committed per batch) and what was imported, passed over and skipped';
COMMENT ON COLUMN flyt.import_run.status IS 'running while the call runs; interrupted when it ended without finishing (error, cancel, crash: found by the next call); succeeded';
COMMENT ON COLUMN flyt.import_run.roots_already_imported IS 'Roots an earlier run imported (they have an IMPORTED history row): passed over, not imported twice';
COMMENT ON COLUMN flyt.import_run.rows_skipped IS 'Source rows that belong to no instance (orphan objects, collections, values), listed in flyt.import_skipped';
COMMENT ON COLUMN flyt.import_run.ids_continue_above IS 'The largest of the source sequence''s last value and the source''s largest instance_object id: new instances get larger ids';

CREATE TABLE flyt.import_skipped (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id bigint NOT NULL REFERENCES flyt.import_run (id) ON DELETE CASCADE,
	reason text NOT NULL,
	source_table text NOT NULL,
	source_id bigint NOT NULL,
	detail jsonb,
	CONSTRAINT import_skipped_reason_check CHECK (reason IN ('id_in_use', 'no_created_at',
		'collection_without_key', 'duplicate_collection_key', 'value_without_key', 'too_deep',
		'too_large', 'orphan_object', 'orphan_collection', 'orphan_value'))
);
COMMENT ON TABLE flyt.import_skipped IS 'What an import left out and why: roots it could not import, rows of the source that belong to no instance; ids only, never values';
COMMENT ON COLUMN flyt.import_skipped.source_id IS 'The source row''s id: instance_object.id, instance_object_collection.id, or the instance_object_id of orphan values (detail: how many)';
CREATE INDEX import_skipped_run_idx ON flyt.import_skipped (run_id, reason);

/*
 * A procedure, not a function: it commits after each batch.  PostgreSQL
 * lets only a procedure without SECURITY DEFINER and without a SET clause
 * control transactions, so this one runs with the caller's rights (it
 * checks that the caller owns flyt.instance or is a superuser) and its C
 * code schema-qualifies every name instead of pinning search_path.
 */
CREATE PROCEDURE flyt_import_legacy(source_schema name, batch_size integer DEFAULT 1000,
	INOUT imported bigint DEFAULT NULL)
AS 'MODULE_PATHNAME', 'flyt_import_legacy'
LANGUAGE C;
COMMENT ON PROCEDURE flyt_import_legacy(name, integer, bigint) IS
$$Import the instances of the Java fint-flyt-instance-service from source_schema
Reads instance_object, instance_object_collection, instance_object_value_per_key
(and instance_object_id_seq when present) as pg_restore or postgres_fdw's IMPORT
FOREIGN SCHEMA put them there. Keeps each root's id and created_at (UTC), rebuilds
each tree exactly, stores no flow headers, queues no Kafka message, records
IMPORTED. One transaction per batch_size roots, in id order: resumable and
idempotent (roots imported before are passed over). New instance ids continue
above the source's sequence. imported: how many this call imported; the report
is in flyt.import_run and flyt.import_skipped. A procedure because it commits
per batch, which PostgreSQL allows only without SECURITY DEFINER: the caller
must own flyt.instance or be a superuser. CALL it outside a transaction block.$$;
REVOKE EXECUTE ON PROCEDURE flyt_import_legacy(name, integer, bigint) FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('flyt.import_run', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.import_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.import_skipped', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.import_skipped_id_seq', '');

-------------------------------------------------------------------------------
-- Flow headers asked of fint-flyt-history-service (issue 12): the cleanup
-- records when it asked for those of an instance that has none.
-------------------------------------------------------------------------------

ALTER TABLE flyt.instance ADD COLUMN flow_headers_requested_at timestamptz;
COMMENT ON COLUMN flyt.instance.flow_headers_requested_at IS 'When the cleanup last asked fint-flyt-history-service for the missing flow headers';
