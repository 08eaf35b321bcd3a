/* flyt_instance 0.4 -> 0.5: less work per event written (issue 13): history keyed by (instance_id, version) alone, checks by domains. */

\echo Use "ALTER EXTENSION flyt_instance UPDATE TO '0.5'" to load this file. \quit

-- instance_event.id was never read: every reader goes by instance and
-- version.  Dropping it saves every event an index entry (the hot right-hand
-- page of instance_event_pkey, shared by all concurrent writers) and a call
-- of its sequence.  (instance_id, version) becomes the primary key; its
-- index is built anew here, under the table's lock, in one pass.
-- Its sequence leaves pg_dump's configuration first (dropping it with the
-- column would leave its oid behind there).
ALTER EXTENSION flyt_instance DROP SEQUENCE flyt.instance_event_id_seq;
ALTER TABLE flyt.instance_event DROP COLUMN id;
ALTER TABLE flyt.instance_event DROP CONSTRAINT instance_event_version_unique;
ALTER TABLE flyt.instance_event ADD CONSTRAINT instance_event_pkey PRIMARY KEY (instance_id, version);

-- The CHECK constraints of the two tables every retry, registration and
-- deletion writes become domains: a table's CHECK expressions are read from
-- the catalog text and planned again by every statement that writes the
-- table, a domain's are kept planned in the type cache.  The domains get
-- their constraints only after the columns have their type, so that the
-- change rewrites no table: adding them checks the stored rows once.
CREATE DOMAIN flyt.instance_event_type AS text;
CREATE DOMAIN flyt.instance_event_version AS integer;
CREATE DOMAIN flyt.outbox_attempts AS integer;
CREATE DOMAIN flyt.outbox_headers AS jsonb;
ALTER TABLE flyt.instance_event
	DROP CONSTRAINT instance_event_type_check,
	DROP CONSTRAINT instance_event_version_positive,
	ALTER COLUMN version TYPE flyt.instance_event_version,
	ALTER COLUMN event_type TYPE flyt.instance_event_type;
ALTER TABLE flyt.outbox
	DROP CONSTRAINT outbox_attempts_check,
	DROP CONSTRAINT outbox_headers_is_object,
	ALTER COLUMN attempts TYPE flyt.outbox_attempts,
	ALTER COLUMN headers TYPE flyt.outbox_headers;
ALTER DOMAIN flyt.instance_event_type
	ADD CONSTRAINT instance_event_type_check CHECK (VALUE IN ('REGISTERED', 'RETRY_REQUESTED', 'RETRY_FAILED', 'DISPATCHED', 'DELETED', 'IMPORTED',
		'REDRIVEN', 'REDRIVE_FAILED', 'DISCARDED'));
ALTER DOMAIN flyt.instance_event_version
	ADD CONSTRAINT instance_event_version_positive CHECK (VALUE > 0);
ALTER DOMAIN flyt.outbox_attempts
	ADD CONSTRAINT outbox_attempts_check CHECK (VALUE >= 0);
ALTER DOMAIN flyt.outbox_headers
	ADD CONSTRAINT outbox_headers_is_object CHECK (pg_catalog.jsonb_typeof(VALUE) = 'object');
