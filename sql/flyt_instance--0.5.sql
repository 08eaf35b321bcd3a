/* flyt_instance 0.5: the FINT Flyt instance service inside PostgreSQL. */

\echo Use "CREATE EXTENSION flyt_instance" to load this file. \quit

-- Everything flyt_instance stores and sends is UTF-8 (Kafka's JSON, jsonb
-- of the instances); another database encoding would garble or reject
-- Norwegian text far from where it entered.
DO $$
BEGIN
	IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
		RAISE EXCEPTION 'flyt_instance needs a database with encoding UTF8, not %',
			pg_catalog.getdatabaseencoding()
			USING HINT = 'Create the database with ENCODING ''UTF8'' (for example CREATE DATABASE flyt ENCODING ''UTF8'' TEMPLATE template0) and install the extension there.';
	END IF;
END
$$;

CREATE SCHEMA flyt;
COMMENT ON SCHEMA flyt IS 'Storage of flyt_instance: instances, their history, the Kafka outbox, consumer offsets, dead letters and cleanup runs';

-------------------------------------------------------------------------------
-- Tables
-------------------------------------------------------------------------------

CREATE TABLE flyt.instance (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	payload jsonb NOT NULL,
	flow_headers jsonb,
	source_application_id bigint,
	source_application_integration_id text,
	source_application_instance_id text,
	integration_id bigint,
	created_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT instance_payload_is_object CHECK (jsonb_typeof(payload) = 'object'),
	CONSTRAINT instance_flow_headers_is_object CHECK (flow_headers IS NULL OR jsonb_typeof(flow_headers) = 'object')
);
COMMENT ON TABLE flyt.instance IS 'One row per registered instance; id is the instanceId the rest of Flyt sees';
COMMENT ON COLUMN flyt.instance.payload IS 'The instance tree: {"valuePerKey": {...}, "objectCollectionPerKey": {"k": [instance, ...]}}';
COMMENT ON COLUMN flyt.instance.flow_headers IS 'InstanceFlowHeaders as received, with instanceId filled in; NULL when the instance was stored without them';
-- Cleanup scans by age.
CREATE INDEX instance_created_at_idx ON flyt.instance (created_at);
-- Operators look instances up by the source system's own id.
CREATE INDEX instance_source_application_idx ON flyt.instance (source_application_id, source_application_instance_id);
-- The cleanup finds expired instances without flow headers (imported ones,
-- to be asked of history-service) without walking every expired instance.
CREATE INDEX instance_without_flow_headers_idx ON flyt.instance (created_at) WHERE flow_headers IS NULL;

CREATE TABLE flyt.flow_headers_request (
	instance_id bigint PRIMARY KEY,
	requested_at timestamptz NOT NULL
);
COMMENT ON TABLE flyt.flow_headers_request IS 'When the cleanup last asked fint-flyt-history-service for the flow headers of an instance that has none (kept apart from flyt.instance, so that asking locks no instance row the worker needs to store the reply)';

-- The values of the columns written on every retry, registration and
-- deletion are checked by domains rather than table CHECK constraints: a
-- table's CHECK expressions are read from the catalog text and planned
-- again by every INSERT or UPDATE statement that runs (ExecRelCheck), a
-- domain's are kept planned in the type cache (issue 13: a fifth of a
-- retry's time).
CREATE DOMAIN flyt.instance_event_type AS text
	CONSTRAINT instance_event_type_check CHECK (VALUE IN ('REGISTERED', 'RETRY_REQUESTED', 'RETRY_FAILED', 'DISPATCHED', 'DELETED', 'IMPORTED',
		'REDRIVEN', 'REDRIVE_FAILED', 'DISCARDED'));
CREATE DOMAIN flyt.instance_event_version AS integer
	CONSTRAINT instance_event_version_positive CHECK (VALUE > 0);
CREATE DOMAIN flyt.outbox_attempts AS integer
	CONSTRAINT outbox_attempts_check CHECK (VALUE >= 0);
CREATE DOMAIN flyt.outbox_headers AS jsonb
	CONSTRAINT outbox_headers_is_object CHECK (pg_catalog.jsonb_typeof(VALUE) = 'object');

CREATE TABLE flyt.instance_event (
	instance_id bigint NOT NULL,
	version flyt.instance_event_version NOT NULL,
	event_type flyt.instance_event_type NOT NULL,
	occurred_at timestamptz NOT NULL DEFAULT now(),
	requested_by text,
	correlation_id uuid,
	detail jsonb,
	-- Optimistic concurrency: two writers that read the same last version
	-- collide here.  The only key: a surrogate id would cost every event
	-- one more index entry and a sequence call (issue 13).
	CONSTRAINT instance_event_pkey PRIMARY KEY (instance_id, version)
);
COMMENT ON TABLE flyt.instance_event IS 'History of each instance, one row per state change with a per-instance version';
-- Cleanup finds the DELETED rows whose second retention window has passed.
CREATE INDEX instance_event_deleted_idx ON flyt.instance_event (occurred_at) WHERE event_type = 'DELETED';

CREATE SEQUENCE flyt.outbox_id_seq;
CREATE TABLE flyt.outbox (
	id bigint PRIMARY KEY DEFAULT nextval('flyt.outbox_id_seq'),
	event_name text NOT NULL,
	topic text NOT NULL,
	key text,
	headers flyt.outbox_headers NOT NULL,
	value text,
	created_at timestamptz NOT NULL DEFAULT now(),
	attempts flyt.outbox_attempts NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	last_error text
)
/*
 * Every row is inserted once and deleted within milliseconds once the broker
 * acknowledges it, so the table is almost always nearly empty while dead
 * tuples pile up at the rate of the whole event stream.  The default
 * scale-factor triggers (20% of a tiny table) would let the heap and the
 * primary key index bloat between vacuums and make the pump's index scan
 * walk dead entries; vacuum on a fixed number of dead rows instead, without
 * cost-based sleeps, and keep the statistics of this small table fresh.
 */
WITH (
	autovacuum_vacuum_scale_factor = 0,
	autovacuum_vacuum_threshold = 5000,
	autovacuum_vacuum_insert_scale_factor = 0,
	autovacuum_vacuum_insert_threshold = 20000,
	autovacuum_analyze_scale_factor = 0,
	autovacuum_analyze_threshold = 5000,
	autovacuum_vacuum_cost_delay = 0
);
ALTER SEQUENCE flyt.outbox_id_seq OWNED BY flyt.outbox.id;
COMMENT ON TABLE flyt.outbox IS 'Transactional outbox: every Kafka message is a row here first, written in the transaction that caused it';
COMMENT ON COLUMN flyt.outbox.event_name IS 'Event name without the topic prefix, e.g. instance-requested-for-retry';
COMMENT ON COLUMN flyt.outbox.headers IS 'Kafka headers as a JSON object of header name to the exact header value (UTF-8 text): flyt.instance-flow-headers and flyt.event-id; the worker adds origin.application.id and __TypeId__ when it sends';
COMMENT ON COLUMN flyt.outbox.value IS 'Exact message value (JSON text), NULL for a tombstone-like event such as instance-deleted';

CREATE TABLE flyt.consumer_offset (
	topic text NOT NULL,
	kafka_partition integer NOT NULL,
	next_offset bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (topic, kafka_partition),
	CONSTRAINT consumer_offset_nonnegative CHECK (next_offset >= 0)
);
COMMENT ON TABLE flyt.consumer_offset IS 'Next offset to consume per topic partition, written in the transaction that applied the messages (exactly-once ingestion)';

CREATE TABLE flyt.dead_letter (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic text NOT NULL,
	kafka_partition integer,
	kafka_offset bigint,
	outbox_id bigint,
	original_message_id text NOT NULL,
	message_key bytea,
	headers jsonb,
	original_message_payload bytea,
	failure_transience text NOT NULL,
	message_delivery_attempts integer NOT NULL DEFAULT 1,
	failure_details jsonb NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT dead_letter_transience_check CHECK (failure_transience IN ('TRANSIENT', 'PERMANENT')),
	CONSTRAINT dead_letter_origin_check CHECK ((kafka_offset IS NOT NULL) <> (outbox_id IS NOT NULL))
);
COMMENT ON TABLE flyt.dead_letter IS 'Consumed messages that could not be applied and outbox messages that exhausted redelivery';
COMMENT ON COLUMN flyt.dead_letter.original_message_id IS 'topic/partition/offset of a consumed message, or outbox/<id> of a produced one';
COMMENT ON COLUMN flyt.dead_letter.failure_details IS '{"errorMessage", "sqlstate", "context", ...} of the failure';
CREATE INDEX dead_letter_created_at_idx ON flyt.dead_letter (created_at);

CREATE TABLE flyt.cleanup_run (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	started_at timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz,
	cutoff timestamptz NOT NULL,
	status text NOT NULL DEFAULT 'running',
	deleted bigint NOT NULL DEFAULT 0,
	deleted_without_event bigint NOT NULL DEFAULT 0,
	error text,
	CONSTRAINT cleanup_run_status_check CHECK (status IN ('running', 'succeeded', 'failed'))
);
COMMENT ON TABLE flyt.cleanup_run IS 'One row per scheduled cleanup run; the last 1000 are kept';

-------------------------------------------------------------------------------
-- Functions
--
-- SECURITY DEFINER, so that EXECUTE on a function is the only privilege a
-- caller needs: no role but the owner reads or writes the tables directly.
-- search_path is pinned (the C code qualifies every name anyway), and the
-- history records the caller (the outer role), not the owner.
-------------------------------------------------------------------------------

CREATE FUNCTION flyt_register_instance(headers jsonb, instance jsonb)
RETURNS bigint
AS 'MODULE_PATHNAME', 'flyt_register_instance'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_register_instance(jsonb, jsonb) IS
'Register an instance received with its InstanceFlowHeaders; returns the new instance id
Validates both arguments (SQLSTATE 22023 naming the offending path), stores the
instance, records REGISTERED and queues instance-registered in flyt.outbox.';

CREATE FUNCTION flyt_instance(instance_id bigint)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'flyt_instance'
LANGUAGE C STABLE PARALLEL SAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_instance(bigint) IS
'The stored instance as the wire DTO {id, valuePerKey, objectCollectionPerKey, createdAt}
Unknown id: SQLSTATE P0002.';

CREATE FUNCTION flyt_retry(instance_id bigint)
RETURNS uuid
AS 'MODULE_PATHNAME', 'flyt_retry'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_retry(bigint) IS
'Queue instance-requested-for-retry for one instance; returns the new correlation id
Unknown id: SQLSTATE P0002. Instance without flow headers: SQLSTATE 55000.';

CREATE FUNCTION flyt_retry_batch(instance_ids bigint[],
	OUT instance_id bigint, OUT status text, OUT correlation_id uuid, OUT error text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'flyt_retry_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_retry_batch(bigint[]) IS
'Retry each instance independently; one row per distinct id
status is queued, not_found, no_flow_headers or error; one failure never affects the others.';

CREATE FUNCTION flyt_instance_dispatched(headers jsonb)
RETURNS boolean
AS 'MODULE_PATHNAME', 'flyt_instance_dispatched'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_instance_dispatched(jsonb) IS
'Delete the instance named by headers.instanceId after it was dispatched; false when it was already gone
Records DISPATCHED and DELETED when it existed, and queues instance-deleted with these headers either way, as the original does.';

CREATE FUNCTION flyt_cleanup(older_than interval DEFAULT NULL, max_rows integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'flyt_cleanup'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_cleanup(interval, integer) IS
'Delete instances created before now() - older_than; returns how many were deleted
older_than defaults to flyt_instance.time_to_keep_instance_in_days; max_rows bounds one call.
Queues instance-deleted for each deleted instance that has flow headers and purges history
whose DELETED row is older than the window.';

CREATE FUNCTION flyt_instance_history(instance_id bigint,
	OUT version integer, OUT event_type text, OUT occurred_at timestamptz,
	OUT requested_by text, OUT correlation_id uuid, OUT detail jsonb)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'flyt_instance_history'
LANGUAGE C STABLE PARALLEL SAFE ROWS 5
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_instance_history(bigint) IS
'The history of one instance, oldest first
Unknown id (no history at all): SQLSTATE P0002.';

CREATE FUNCTION flyt_status()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'flyt_status'
LANGUAGE C VOLATILE PARALLEL SAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_status() IS
'Health of flyt_instance: status UP or DOWN with the reason, worker, Kafka and circuit, outbox, consumer, dead letters, cleanup
See docs/worker.md for every field.';

CREATE FUNCTION flyt_metrics()
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_metrics'
LANGUAGE C VOLATILE PARALLEL SAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_metrics() IS
'The figures of flyt_status() and counters in Prometheus text exposition format';

-------------------------------------------------------------------------------
-- Privileges: nothing is callable or readable by PUBLIC.
-------------------------------------------------------------------------------

REVOKE ALL ON SCHEMA flyt FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
	flyt_register_instance(jsonb, jsonb),
	flyt_instance(bigint),
	flyt_retry(bigint),
	flyt_retry_batch(bigint[]),
	flyt_instance_dispatched(jsonb),
	flyt_cleanup(interval, integer),
	flyt_instance_history(bigint),
	flyt_status(),
	flyt_metrics()
FROM PUBLIC;

-------------------------------------------------------------------------------
-- pg_dump: the tables hold user data, so they are dumped with it.
-------------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('flyt.instance', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.instance_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.instance_event', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.consumer_offset', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.dead_letter', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.dead_letter_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.cleanup_run', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.cleanup_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.flow_headers_request', '');

-------------------------------------------------------------------------------
-- flyt_web: PostgREST's anonymous role.  FINT's tokens carry no role claim,
-- so every request runs as this role; flyt_api.authorize() decides.  Roles
-- belong to the cluster, not the database: create it only once.
-------------------------------------------------------------------------------

DO $$
DECLARE
	r record;
BEGIN
	SELECT oid, * INTO r FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'flyt_web';
	IF NOT FOUND THEN
		CREATE ROLE flyt_web NOLOGIN;
	ELSIF r.rolcanlogin OR r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
		OR EXISTS (SELECT FROM pg_catalog.pg_auth_members m WHERE m.member OPERATOR(pg_catalog.=) r.oid) THEN
		-- Every HTTP request runs as flyt_web: it must be able to do nothing
		-- but what the extension grants it.
		RAISE EXCEPTION 'role flyt_web exists and can do more than PostgREST''s anonymous role may'
			USING DETAIL = 'flyt_web can log in, has attributes beyond NOLOGIN, or is a member of other roles.',
				HINT = 'Make it NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS and a member of no role, or drop it, then install again.';
	END IF;
	-- otherwise it is the role another database's install made: reuse it
END
$$;

CREATE SCHEMA flyt_api;
COMMENT ON SCHEMA flyt_api IS
$$FINT Flyt instance service
Retry instances of the FINT Flyt flow. Callers authenticate with a user's
bearer token from FINT's identity provider, with claims organizationid,
objectidentifier and roles (role-catalog URLs). Of the token's roles only
those its organisation is authorised for count; DEVELOPER implies ADMIN,
ADMIN implies USER, and the API needs USER.$$;

CREATE FUNCTION flyt_api.authorize()
RETURNS void
AS 'MODULE_PATHNAME', 'flyt_api_authorize'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION flyt_api.authorize() IS
$$Check the caller's token (PostgREST's db-pre-request)
401 without a token, or when its organizationid or objectidentifier claim is
missing or blank. 403 when flyt_instance.authorized_org_id_role_pairs does not
list its organisation, or when it grants no USER: the token's roles (exactly
https://role-catalog.vigoiks.no/vigo/flyt/user, .../admin, .../developer) are
first filtered by the roles listed for the organisation, then DEVELOPER implies
ADMIN and ADMIN implies USER. The JWT subject opens nothing.$$;

CREATE FUNCTION flyt_api.retry(instance_id bigint)
RETURNS uuid
AS 'MODULE_PATHNAME', 'flyt_api_retry'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_api.retry(bigint) IS
$$Retry one instance
Queues instance-requested-for-retry with a fresh correlation id and returns
it. 404 when the instance is unknown; 500 when it has no flow headers or the
retry failed. Was POST /api/intern/handlinger/instanser/{instanceId}/prov-igjen.$$;

CREATE FUNCTION flyt_api.retry_batch(jsonb,
	OUT instance_id bigint, OUT status text, OUT correlation_id uuid, OUT error text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'flyt_api_retry_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_api.retry_batch(jsonb) IS
$$Retry many instances
The body is the JSON array of instance ids. Each distinct id is retried on
its own; one result per id: status queued, not_found, no_flow_headers or
error, with the correlation id or the error. 400 when the body is not an
array of integers. Was POST /api/intern/handlinger/instanser/prov-igjen/batch.$$;

REVOKE ALL ON SCHEMA flyt_api FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
	flyt_api.authorize(),
	flyt_api.retry(bigint),
	flyt_api.retry_batch(jsonb)
FROM PUBLIC;
GRANT USAGE ON SCHEMA flyt_api TO flyt_web;
GRANT EXECUTE ON FUNCTION
	flyt_api.authorize(),
	flyt_api.retry(bigint),
	flyt_api.retry_batch(jsonb)
TO flyt_web;

-------------------------------------------------------------------------------
-- The exact JSON text flyt_instance writes into Kafka headers and values:
-- compact, keys in the order jsonb keeps them.  The set-based cleanup uses
-- it, so that instance-deleted carries its flow headers byte for byte as
-- every other event does (jsonb::text adds spaces).
-------------------------------------------------------------------------------

CREATE FUNCTION flyt.wire_json(jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_wire_json'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION flyt.wire_json(jsonb) IS
'The compact JSON text flyt_instance writes on the wire for a jsonb value (internal)';
REVOKE EXECUTE ON FUNCTION flyt.wire_json(jsonb) FROM PUBLIC;

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

-------------------------------------------------------------------------------
-- Import from the Java fint-flyt-instance-service (issue 12).
--
-- CALL flyt_import_legacy('<schema>') reads the Java service's tables
-- (instance_object, instance_object_collection, instance_object_value_per_key
-- and, when present, instance_object_id_seq) from a schema of this database
-- and records each run in flyt.import_run and what it left out in
-- flyt.import_skipped.  docs/cutover.md is the runbook.
-------------------------------------------------------------------------------

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
-- Dead letters an operator can act on (issue 15).
--
-- flyt.dead_letter rows get a status: dead until an operator redrives them
-- (an outbox message goes back into flyt.outbox with its flyt.event-id; a
-- consumed message is applied again as the consumer applies it) or discards
-- them, recorded with who and when.  flyt.dead_letter_action keeps every
-- redrive and discard, failed redrives with the reason they replaced.
-------------------------------------------------------------------------------

ALTER TABLE flyt.dead_letter
	ADD COLUMN status text NOT NULL DEFAULT 'dead',
	ADD COLUMN resolved_at timestamptz,
	ADD COLUMN resolved_by text,
	ADD CONSTRAINT dead_letter_status_check CHECK (status IN ('dead', 'redriven', 'discarded')),
	ADD CONSTRAINT dead_letter_resolved_check CHECK ((status = 'dead') = (resolved_at IS NULL));
COMMENT ON COLUMN flyt.dead_letter.status IS 'dead until redriven (flyt_dead_letter_redrive) or discarded (flyt_dead_letter_discard)';
COMMENT ON COLUMN flyt.dead_letter.resolved_at IS 'When it was redriven or discarded; NULL while dead';
COMMENT ON COLUMN flyt.dead_letter.resolved_by IS 'Who redrove or discarded it: the JWT subject through the HTTP API, otherwise the calling role';
CREATE INDEX dead_letter_status_idx ON flyt.dead_letter (status, created_at);

CREATE TABLE flyt.dead_letter_action (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	dead_letter_id bigint NOT NULL REFERENCES flyt.dead_letter (id) ON DELETE CASCADE,
	action text NOT NULL,
	acted_at timestamptz NOT NULL DEFAULT now(),
	acted_by text NOT NULL,
	outbox_id bigint,
	instance_id bigint,
	failure_details jsonb,
	replaced_failure_details jsonb,
	CONSTRAINT dead_letter_action_check CHECK (action IN ('redriven', 'redrive_failed', 'discarded'))
);
COMMENT ON TABLE flyt.dead_letter_action IS 'Every redrive and discard of a dead letter: who, when, and what came of it';
COMMENT ON COLUMN flyt.dead_letter_action.action IS 'redriven (queued again or applied), redrive_failed (applied again and failed: still dead), discarded';
COMMENT ON COLUMN flyt.dead_letter_action.outbox_id IS 'The new flyt.outbox row of a redriven outbox message';
COMMENT ON COLUMN flyt.dead_letter_action.instance_id IS 'The instance concerned, when there is one (the instance a redriven instance-received registered)';
COMMENT ON COLUMN flyt.dead_letter_action.failure_details IS 'The failure of a redrive_failed, as in flyt.dead_letter.failure_details';
COMMENT ON COLUMN flyt.dead_letter_action.replaced_failure_details IS 'The reason the dead letter had before a redrive_failed replaced it';
CREATE INDEX dead_letter_action_dead_letter_idx ON flyt.dead_letter_action (dead_letter_id);

CREATE FUNCTION flyt_dead_letters(topic text DEFAULT NULL, since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL, sqlstate text DEFAULT NULL, transience text DEFAULT NULL,
	status text DEFAULT NULL, with_payload boolean DEFAULT false, max_rows integer DEFAULT 100,
	OUT id bigint, OUT dead_letter_status text, OUT dead_letter_topic text, OUT origin text,
	OUT kafka_partition integer, OUT kafka_offset bigint, OUT outbox_id bigint,
	OUT original_message_id text, OUT event_name text, OUT event_id text,
	OUT failure_transience text, OUT failure_sqlstate text, OUT error_message text,
	OUT attempts integer, OUT redrives integer, OUT created_at timestamptz,
	OUT resolved_at timestamptz, OUT resolved_by text,
	OUT message_key text, OUT headers jsonb, OUT payload text, OUT failure_details jsonb)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'flyt_dead_letters'
LANGUAGE C STABLE PARALLEL SAFE ROWS 100
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_dead_letters(text, timestamptz, timestamptz, text, text, text, boolean, integer) IS
'The dead letters, newest first, filtered by topic, created_at in [since, until), SQLSTATE, transience and status
Without with_payload, message_key, headers, payload and failure_details are NULL: they may hold personal data.
max_rows: 1 to 10000.';

CREATE FUNCTION flyt_dead_letter_redrive(id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_dead_letter_redrive'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_dead_letter_redrive(bigint) IS
'Redrive one dead letter; returns redriven, failed, already_redriven, already_discarded or not_redrivable
An outbox message is queued again with its headers (same flyt.event-id) and value; a consumed
instance-received or instance-dispatched is applied again as the consumer applies it, and stays
dead with the new reason when that fails. Unknown id: SQLSTATE P0002.';

CREATE FUNCTION flyt_dead_letter_redrive(topic text DEFAULT NULL, since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL, sqlstate text DEFAULT NULL, transience text DEFAULT NULL,
	max_rows integer DEFAULT 100)
RETURNS bigint
AS 'MODULE_PATHNAME', 'flyt_dead_letter_redrive_matching'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_dead_letter_redrive(text, timestamptz, timestamptz, text, text, integer) IS
'Redrive the dead letters that match, oldest first, at most max_rows; returns how many were redriven
Each as flyt_dead_letter_redrive(id); a NOTICE says how many failed or could not be redriven.';

CREATE FUNCTION flyt_dead_letter_discard(id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_dead_letter_discard'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_dead_letter_discard(bigint) IS
'Discard one dead letter; returns discarded, already_discarded or already_redriven
The row stays, with status discarded and who and when. Unknown id: SQLSTATE P0002.';

CREATE FUNCTION flyt_dead_letter_discard(topic text DEFAULT NULL, since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL, sqlstate text DEFAULT NULL, transience text DEFAULT NULL,
	max_rows integer DEFAULT 100)
RETURNS bigint
AS 'MODULE_PATHNAME', 'flyt_dead_letter_discard_matching'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_dead_letter_discard(text, timestamptz, timestamptz, text, text, integer) IS
'Discard the dead letters that match, oldest first, at most max_rows; returns how many were discarded';

REVOKE EXECUTE ON FUNCTION
	flyt_dead_letters(text, timestamptz, timestamptz, text, text, text, boolean, integer),
	flyt_dead_letter_redrive(bigint),
	flyt_dead_letter_redrive(text, timestamptz, timestamptz, text, text, integer),
	flyt_dead_letter_discard(bigint),
	flyt_dead_letter_discard(text, timestamptz, timestamptz, text, text, integer)
FROM PUBLIC;

-- The admin API (INTEROP.md 6: /api/intern/admin/** needs ROLE_ADMIN).
CREATE FUNCTION flyt_api.dead_letters(topic text DEFAULT NULL, since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL, sqlstate text DEFAULT NULL, transience text DEFAULT NULL,
	status text DEFAULT NULL, with_payload boolean DEFAULT false, max_rows integer DEFAULT 100,
	OUT id bigint, OUT dead_letter_status text, OUT dead_letter_topic text, OUT origin text,
	OUT kafka_partition integer, OUT kafka_offset bigint, OUT outbox_id bigint,
	OUT original_message_id text, OUT event_name text, OUT event_id text,
	OUT failure_transience text, OUT failure_sqlstate text, OUT error_message text,
	OUT attempts integer, OUT redrives integer, OUT created_at timestamptz,
	OUT resolved_at timestamptz, OUT resolved_by text,
	OUT message_key text, OUT headers jsonb, OUT payload text, OUT failure_details jsonb)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'flyt_api_dead_letters'
LANGUAGE C STABLE PARALLEL UNSAFE ROWS 100
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_api.dead_letters(text, timestamptz, timestamptz, text, text, text, boolean, integer) IS
$$List dead letters (ADMIN)
Newest first; filters topic, since, until, sqlstate, transience (TRANSIENT or
PERMANENT), status (dead, redriven, discarded), max_rows (1 to 10000).
with_payload=true adds the key, headers, value and failure details, which may
hold personal data. Needs ADMIN (DEVELOPER implies it). Was no endpoint of the
original; GET /api/intern/admin/instanser/dead-letters.$$;

CREATE FUNCTION flyt_api.dead_letter_redrive(id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_api_dead_letter_redrive'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_api.dead_letter_redrive(bigint) IS
$$Redrive one dead letter (ADMIN)
Returns redriven, failed (applied again and failed: still dead, with the new
reason), already_redriven, already_discarded or not_redrivable. 404 when the
dead letter is unknown. Recorded with the token's subject. Needs ADMIN.
POST /api/intern/admin/instanser/dead-letters/{id}/redrive.$$;

CREATE FUNCTION flyt_api.dead_letter_discard(id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'flyt_api_dead_letter_discard'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION flyt_api.dead_letter_discard(bigint) IS
$$Discard one dead letter (ADMIN)
Returns discarded, already_discarded or already_redriven. 404 when the dead
letter is unknown. Recorded with the token's subject. Needs ADMIN.
POST /api/intern/admin/instanser/dead-letters/{id}/discard.$$;

REVOKE EXECUTE ON FUNCTION
	flyt_api.dead_letters(text, timestamptz, timestamptz, text, text, text, boolean, integer),
	flyt_api.dead_letter_redrive(bigint),
	flyt_api.dead_letter_discard(bigint)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	flyt_api.dead_letters(text, timestamptz, timestamptz, text, text, text, boolean, integer),
	flyt_api.dead_letter_redrive(bigint),
	flyt_api.dead_letter_discard(bigint)
TO flyt_web;

SELECT pg_catalog.pg_extension_config_dump('flyt.dead_letter_action', '');
SELECT pg_catalog.pg_extension_config_dump('flyt.dead_letter_action_id_seq', '');

-------------------------------------------------------------------------------
-- Health and metrics for operators (issue 14): the original service's
-- /actuator/health, /actuator/health/readiness, /actuator/health/liveness and
-- /actuator/prometheus through PostgREST, and flyt_metrics() as rows for
-- postgres_exporter.  Only what flyt_status() and flyt_metrics() show: no
-- payload data, no flow headers, no token.
-------------------------------------------------------------------------------

/*
 * flyt_metrics() as rows, one per sample.  postgres_exporter (the sidecar of
 * kustomize/base, monitoring/postgres-exporter-queries.yaml) reads these, so
 * the text of flyt_metrics() stays the one source of every figure.  In label
 * values \" and \\ are unescaped; a \n stays as written.
 */
CREATE FUNCTION flyt_metric_samples(OUT metric text, OUT labels jsonb, OUT value double precision)
RETURNS SETOF record
LANGUAGE sql VOLATILE PARALLEL SAFE ROWS 60
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
SELECT m[1],
	coalesce((SELECT jsonb_object_agg(l[1], regexp_replace(l[2], '\\([\\"])', '\1', 'g'))
		FROM regexp_matches(coalesce(m[2], ''), '([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', 'g') AS l), '{}'),
	(CASE m[3] WHEN '+Inf' THEN 'Infinity' WHEN '-Inf' THEN '-Infinity' ELSE m[3] END)::double precision
FROM regexp_split_to_table(public.flyt_metrics(), E'\n') WITH ORDINALITY AS line(text, n),
	regexp_match(line.text, '^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$') AS m
WHERE m IS NOT NULL
ORDER BY line.n
$$;
COMMENT ON FUNCTION flyt_metric_samples() IS
$$flyt_metrics() as rows: metric name, labels as a JSON object, value
One row per sample line of the Prometheus text, in its order. What the
postgres_exporter sidecar reads (monitoring/postgres-exporter-queries.yaml).$$;

/*
 * PostgREST's db-pre-request.  The four actuator functions below answer
 * without a token, as the original's actuator paths are permitAll; everything
 * else goes through flyt_api.authorize() as before (which each API function
 * calls again itself).  request.path and request.method are set by PostgREST
 * from the request it received, so only exactly these paths, GET or HEAD,
 * pass.  Who can send such a request is decided by the network: the proxy
 * serves them only under {base}/actuator/, which the IngressRoute does not
 * route, and refuses them under .../instanser/rest/.
 */
CREATE FUNCTION flyt_api.pre_request()
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF current_setting('request.method', true) IN ('GET', 'HEAD')
		AND current_setting('request.path', true) IN
			('/rpc/health', '/rpc/readiness', '/rpc/liveness', '/rpc/metrics') THEN
		RETURN;
	END IF;
	PERFORM flyt_api.authorize();
END
$$;
COMMENT ON FUNCTION flyt_api.pre_request() IS
$$PostgREST's db-pre-request: flyt_api.authorize(), except for the actuator
GET /rpc/health, /rpc/readiness, /rpc/liveness and /rpc/metrics, which need no
token (the proxy serves them only inside the cluster).$$;

/* Answers 503 through PostgREST's response.status when DOWN. */
CREATE FUNCTION flyt_api.health()
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s jsonb := public.flyt_status();
BEGIN
	IF s->>'status' IS DISTINCT FROM 'UP' THEN
		PERFORM set_config('response.status', '503', true);
	END IF;
	-- the brokers' addresses are not for the network
	RETURN s #- '{kafka,bootstrap_servers}';
END
$$;
COMMENT ON FUNCTION flyt_api.health() IS
$$Health (was GET /actuator/health)
flyt_status() without the Kafka addresses: status UP (200) or DOWN (503) with
the reason, worker, Kafka circuit, outbox, consumer, dead letters, cleanup.$$;

CREATE FUNCTION flyt_api.readiness()
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s jsonb := public.flyt_status();
BEGIN
	IF s->>'status' IS DISTINCT FROM 'UP' THEN
		PERFORM set_config('response.status', '503', true);
	END IF;
	RETURN jsonb_build_object('status', s->'status', 'reason', s->'reason');
END
$$;
COMMENT ON FUNCTION flyt_api.readiness() IS
$$Readiness (was GET /actuator/health/readiness)
UP (200) when flyt_status() is UP: the worker runs, Kafka answers, the circuit
is closed and the consumer has its partitions; otherwise DOWN (503) with the
reason.$$;

/*
 * Liveness never depends on Kafka: restarting Postgres does not bring a
 * broker back.  DOWN only when flyt_instance is preloaded and its worker
 * process is not there; the postmaster restarts a worker 5 s after it exits,
 * so a probe should allow a minute (kustomize/base: 6 x 10 s).
 */
CREATE FUNCTION flyt_api.liveness()
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s jsonb := public.flyt_status();
	preloaded boolean := s->>'reason' IS DISTINCT FROM
		'worker is not running (flyt_instance is not in shared_preload_libraries)';
	live boolean := NOT preloaded OR coalesce((s->'worker'->>'running')::boolean, false);
BEGIN
	IF NOT live THEN
		PERFORM set_config('response.status', '503', true);
	END IF;
	RETURN jsonb_build_object('status', CASE WHEN live THEN 'UP' ELSE 'DOWN' END,
		'worker', jsonb_build_object('preloaded', preloaded,
			'running', s->'worker'->'running', 'state', s->'worker'->'state'));
END
$$;
COMMENT ON FUNCTION flyt_api.liveness() IS
$$Liveness (was GET /actuator/health/liveness)
UP (200) when the database answers and, with flyt_instance preloaded, its
background worker runs; DOWN (503) otherwise. Kafka does not count.$$;

/* PostgREST (v12) media type handler: a function returning this domain
 * answers a request with Accept: text/plain with the text as it is. */
CREATE DOMAIN flyt_api."text/plain" AS text;
COMMENT ON DOMAIN flyt_api."text/plain" IS
'PostgREST media type handler: a function returning it answers text/plain';

CREATE FUNCTION flyt_api.metrics()
RETURNS flyt_api."text/plain"
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM set_config('response.headers',
		'[{"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}]', true);
	RETURN public.flyt_metrics();
END
$$;
COMMENT ON FUNCTION flyt_api.metrics() IS
$$Metrics (was GET /actuator/prometheus)
flyt_metrics(): the Prometheus text format, version 0.0.4. Call with
Accept: text/plain.$$;

REVOKE EXECUTE ON FUNCTION
	flyt_metric_samples(),
	flyt_api.pre_request(),
	flyt_api.health(),
	flyt_api.readiness(),
	flyt_api.liveness(),
	flyt_api.metrics()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	flyt_api.pre_request(),
	flyt_api.health(),
	flyt_api.readiness(),
	flyt_api.liveness(),
	flyt_api.metrics()
TO flyt_web;
-- pg_monitor: the predefined role monitoring agents such as postgres_exporter
-- log in with (the sidecar's flyt_monitor is a member).
GRANT EXECUTE ON FUNCTION flyt_status(), flyt_metrics(), flyt_metric_samples() TO pg_monitor;
