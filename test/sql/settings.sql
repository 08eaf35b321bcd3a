-- The flyt_instance.* settings: every one listed with a description, and
-- invalid values rejected by name with the accepted forms.
SELECT name, setting, unit, context, vartype, min_val, max_val, short_desc <> '' AS described
FROM pg_settings WHERE name LIKE 'flyt_instance.%' ORDER BY name;

-- The prefix is reserved: a misspelt setting name is an error, not silently accepted.
SET flyt_instance.org = 'fintlabs.no';

-- Durations (ALTER SYSTEM runs the check hooks without touching the running server).
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '4d';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '96h';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '30m';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'P4D';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'PT96H';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'p1dt12h30m';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'PT0.5S';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '4x';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '4';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'd';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '-4d';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '0s';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'P1Y';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'PT';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'PT5M3H';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = 'P4DT';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '999999d';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time = '';
ALTER SYSTEM RESET flyt_instance.instance_processing_events_retention_time;
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time_ms = '345600000';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time_ms = '';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time_ms = '4d';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time_ms = '0';
ALTER SYSTEM SET flyt_instance.instance_processing_events_retention_time_ms = '-1';
ALTER SYSTEM RESET flyt_instance.instance_processing_events_retention_time_ms;
ALTER SYSTEM SET flyt_instance.cleanup_interval = 'PT24H';
ALTER SYSTEM SET flyt_instance.cleanup_interval = '0s';
ALTER SYSTEM SET flyt_instance.cleanup_interval = 'daily';
ALTER SYSTEM RESET flyt_instance.cleanup_interval;
ALTER SYSTEM SET flyt_instance.cleanup_initial_delay = '0s';
ALTER SYSTEM SET flyt_instance.cleanup_initial_delay = '10 seconds';
ALTER SYSTEM RESET flyt_instance.cleanup_initial_delay;

-- Numbers out of range.
ALTER SYSTEM SET flyt_instance.time_to_keep_instance_in_days = 0;
ALTER SYSTEM SET flyt_instance.cleanup_batch_size = 0;
ALTER SYSTEM SET flyt_instance.redelivery_max_no = -1;
ALTER SYSTEM SET flyt_instance.max_in_flight = 0;
ALTER SYSTEM SET flyt_instance.max_in_flight_memory = '32kB';
ALTER SYSTEM SET flyt_instance.max_in_flight_memory = '2GB';
ALTER SYSTEM SET flyt_instance.max_in_flight_memory = 'lots';
ALTER SYSTEM SET flyt_instance.max_in_flight_memory = '16MB';
ALTER SYSTEM RESET flyt_instance.max_in_flight_memory;
ALTER SYSTEM SET flyt_instance.redelivery_millis = '0';
ALTER SYSTEM SET flyt_instance.redelivery_millis = '2s';
ALTER SYSTEM RESET flyt_instance.redelivery_millis;
SET flyt_instance.max_instance_bytes = '100';
SET flyt_instance.max_instance_bytes = '64MB';
SHOW flyt_instance.max_instance_bytes;
RESET flyt_instance.max_instance_bytes;

-- JSON of the authorised organisations.
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"vigo.no": ["DEVELOPER", "USER"], "fintlabs.no": []}';
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"vigo.no": ["DEVELOPER"';
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '["vigo.no"]';
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"vigo.no": "USER"}';
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"vigo.no": ["USERS"]}';
-- enum names as the original's Jackson reads them: exact, not URLs
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"vigo.no": ["user"]}';
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"vigo.no": ["https://role-catalog.vigoiks.no/vigo/flyt/user"]}';
-- what the overlays render for namespace afk-no
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"afk.no":["USER"],"viken.no":["USER"],"frid-iks.no":["USER"],"vigo.no":["DEVELOPER","USER"],"novari.no":["DEVELOPER","USER"]}';
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '{"": ["USER"]}';
ALTER SYSTEM SET flyt_instance.authorized_org_id_role_pairs = '';
ALTER SYSTEM RESET flyt_instance.authorized_org_id_role_pairs;

-- internal_clients is gone since 0.4: JWT subjects open nothing (the
-- original's internal-client API is denyAll).
ALTER SYSTEM SET flyt_instance.internal_clients = 'flyt-web';

-- Names and Kafka properties.
ALTER SYSTEM SET flyt_instance.org_id = 'vigo.no';
ALTER SYSTEM SET flyt_instance.org_id = 'vigo no';
ALTER SYSTEM RESET flyt_instance.org_id;
ALTER SYSTEM SET flyt_instance.domain_context = '';
ALTER SYSTEM SET flyt_instance.domain_context = 'flyt/x';
ALTER SYSTEM SET flyt_instance.application_id = '';
ALTER SYSTEM SET flyt_instance.kafka_config = 'security.protocol=SASL_SSL; sasl.mechanism=PLAIN;';
ALTER SYSTEM SET flyt_instance.kafka_config = 'sasl.password';
ALTER SYSTEM SET flyt_instance.kafka_config = 'no.such.property=secret-value';
ALTER SYSTEM SET flyt_instance.kafka_config = 'security.protocol=carrier-pigeon';
-- A ";" or "\" inside a value is escaped with "\": escaped, the ";" belongs
-- to the value (which librdkafka then refuses), unescaped it ends the item.
ALTER SYSTEM SET flyt_instance.kafka_config = 'security.protocol=plaintext\;';
ALTER SYSTEM SET flyt_instance.kafka_config = 'security.protocol=plaintext;';
ALTER SYSTEM SET flyt_instance.kafka_config = 'sasl.password=pa\;ss\\wo=rd ;security.protocol=SASL_SSL';
ALTER SYSTEM SET flyt_instance.kafka_config = ' = x';
ALTER SYSTEM RESET flyt_instance.kafka_config;
ALTER SYSTEM SET flyt_instance.database = '';

-- Server-wide settings cannot be changed in a session.
SET flyt_instance.org_id = 'other.no';
SET flyt_instance.authorized_org_id_role_pairs = '{}';

-- The Kafka properties may hold secrets: hidden from roles that are not superusers.
CREATE ROLE flyt_settings_reader;
SET ROLE flyt_settings_reader;
SHOW flyt_instance.kafka_config;
SELECT count(*) AS visible FROM pg_settings WHERE name = 'flyt_instance.kafka_config';
RESET ROLE;
DROP ROLE flyt_settings_reader;

-- Nothing of the above stayed in postgresql.auto.conf.
SELECT name FROM pg_file_settings WHERE name LIKE 'flyt_instance.%' AND sourcefile LIKE '%postgresql.auto.conf';
