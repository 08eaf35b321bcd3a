/* flyt_instance 0.4 -> 0.5: history keyed by (instance_id, version) alone (issue 13). */

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
