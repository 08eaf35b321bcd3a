/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The flyt_instance.* settings: definitions, check hooks and the values
 *	  derived from them.
 *
 * Every setting rejects a bad value with a message that names the setting
 * and the accepted forms; nothing is silently replaced by a default.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "pg_jansson.h"

#include <ctype.h>
#include <limits.h>

#include <librdkafka/rdkafka.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "duration.h"
#include "guc.h"

char	   *flyt_database = NULL;
char	   *flyt_kafka_bootstrap_servers = NULL;
char	   *flyt_kafka_config = NULL;
char	   *flyt_org_id = NULL;
char	   *flyt_domain_context = NULL;
char	   *flyt_application_id = NULL;
int			flyt_time_to_keep_instance_in_days = 60;
int64		flyt_cleanup_interval_ms = 0;
int64		flyt_cleanup_initial_delay_ms = 0;
int			flyt_cleanup_batch_size = 10000;
int			flyt_redelivery_max_no = 10;
int			flyt_redelivery_millis = 1000;
int			flyt_max_in_flight = 10000;
int			flyt_max_in_flight_memory_kb = 4096;
int			flyt_consumer_assignment_grace_s = 60;
char	   *flyt_authorized_org_id_role_pairs = NULL;
int			flyt_max_instance_bytes = 16 * 1024 * 1024;
int			flyt_topic_replication_factor = 2;
int			flyt_flow_headers_timeout_ms = 15000;
int			flyt_error_event_format = FLYT_ERRORS_LEGACY;

static const struct config_enum_entry error_event_format_options[] = {
	{"legacy", FLYT_ERRORS_LEGACY, false},
	{"instance-error", FLYT_ERRORS_INSTANCE_ERROR, false},
	{NULL, 0, false}
};

/* Raw strings of the duration settings; the parsed values live above. */
static char *retention_time_text = NULL;
static char *retention_time_ms_text = NULL;
static char *cleanup_interval_text = NULL;
static char *cleanup_initial_delay_text = NULL;

static int64 retention_time_ms = 0;
static int64 retention_time_ms_override = -1;	/* -1: unset */

/* Roles the HTTP API understands, strongest first (DEVELOPER implies ADMIN implies USER). */
static const char *const known_roles[] = {"DEVELOPER", "ADMIN", "USER"};

/* Kafka topic names allow [a-zA-Z0-9._-] and at most 249 characters. */
#define MAX_NAME_PART 100

/*
 * Stores a parsed int64 for the assign hook.  GUC owns *extra and frees it
 * with free(), so it must come from malloc().
 */
static bool
set_int64_extra(void **extra, int64 value)
{
	int64	   *p = malloc(sizeof(int64));

	if (p == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
		return false;
	}
	*p = value;
	*extra = p;
	return true;
}

/* Check hook of the Spring-style/ISO-8601 duration settings. */
static bool
check_duration(char **newval, void **extra, GucSource source)
{
	int64		ms;
	const char *problem;

	if (!flyt_parse_duration(*newval, &ms, &problem))
	{
		GUC_check_errdetail("%s.", problem);
		GUC_check_errhint("Use %s.", FLYT_DURATION_FORMS);
		return false;
	}
	return set_int64_extra(extra, ms);
}

/* Like check_duration, but zero is not a usable interval or retention. */
static bool
check_positive_duration(char **newval, void **extra, GucSource source)
{
	if (!check_duration(newval, extra, source))
		return false;
	if (*(int64 *) *extra <= 0)
	{
		GUC_check_errdetail("The duration must be longer than zero.");
		GUC_check_errhint("Use %s.", FLYT_DURATION_FORMS);
		return false;
	}
	return true;
}

static void
assign_retention_time(const char *newval, void *extra)
{
	retention_time_ms = *(int64 *) extra;
}

static void
assign_cleanup_interval(const char *newval, void *extra)
{
	flyt_cleanup_interval_ms = *(int64 *) extra;
}

static void
assign_cleanup_initial_delay(const char *newval, void *extra)
{
	flyt_cleanup_initial_delay_ms = *(int64 *) extra;
}

/* Check hook of the milliseconds retention: empty means unset. */
static bool
check_retention_time_ms(char **newval, void **extra, GucSource source)
{
	int64		ms = -1;
	const char *problem;

	if (*newval != NULL && (*newval)[strspn(*newval, " \t")] != '\0')
	{
		if (!flyt_parse_milliseconds(*newval, &ms, &problem))
		{
			GUC_check_errdetail("%s.", problem);
			GUC_check_errhint("Use a whole number of milliseconds such as 345600000, or an empty string to use flyt_instance.instance_processing_events_retention_time.");
			return false;
		}
		if (ms <= 0)
		{
			GUC_check_errdetail("The retention must be longer than zero.");
			return false;
		}
	}
	return set_int64_extra(extra, ms);
}

static void
assign_retention_time_ms(const char *newval, void *extra)
{
	retention_time_ms_override = *(int64 *) extra;
}

/*
 * The topic retention in milliseconds: the _ms setting when set, otherwise
 * the duration setting.
 */
int64
flyt_topic_retention_ms(void)
{
	return retention_time_ms_override > 0 ? retention_time_ms_override : retention_time_ms;
}

/*
 * Checks that a value can be part of a Kafka topic name.  Dots in the org id
 * become dashes later, so dots are fine here.
 */
static bool
check_topic_part(const char *value, bool allow_empty)
{
	const char *p;

	if (value == NULL || *value == '\0')
	{
		if (allow_empty)
			return true;
		GUC_check_errdetail("The value must not be empty.");
		return false;
	}
	if (strlen(value) > MAX_NAME_PART)
	{
		GUC_check_errdetail("The value is longer than %d characters.", MAX_NAME_PART);
		return false;
	}
	for (p = value; *p; p++)
	{
		if (!isalnum((unsigned char) *p) && *p != '.' && *p != '-' && *p != '_')
		{
			GUC_check_errdetail("Only letters, digits, \".\", \"-\" and \"_\" can be part of a Kafka topic name.");
			return false;
		}
	}
	return true;
}

static bool
check_org_id(char **newval, void **extra, GucSource source)
{
	if (!check_topic_part(*newval, true))
	{
		GUC_check_errhint("Set the FINT organisation id, such as fintlabs.no.");
		return false;
	}
	return true;
}

static bool
check_domain_context(char **newval, void **extra, GucSource source)
{
	if (!check_topic_part(*newval, false))
	{
		GUC_check_errhint("The default is flyt.");
		return false;
	}
	return true;
}

static bool
check_application_id(char **newval, void **extra, GucSource source)
{
	if (!check_topic_part(*newval, false))
	{
		GUC_check_errhint("The default is fint-flyt-instance-service, the Java service's consumer group.");
		return false;
	}
	return true;
}

static bool
check_database(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || **newval == '\0')
	{
		GUC_check_errdetail("The worker needs a database name.");
		return false;
	}
	return true;
}

/*
 * Walks kafka_config, "key=value;key=value": calls fn for each property,
 * in order.  Blanks around a key and before a property are ignored; the
 * value is taken as written.  A ";" or "\" inside a value is written "\;"
 * or "\\" (a password may hold either).  Returns false when an item is
 * not key=value (fn is then not called for it or any later one), or when
 * fn returned false.  The one parser of the setting: the check hook and
 * the worker read it alike.
 */
bool
flyt_kafka_config_foreach(const char *config, FlytKafkaPropertyFn fn, void *arg)
{
	StringInfoData item;
	const char *p = config;
	bool		ok = true;

	if (config == NULL)
		return true;
	initStringInfo(&item);
	while (ok && *p != '\0')
	{
		char	   *key;
		char	   *eq;

		/* one item, unescaped, up to an unescaped ';' */
		resetStringInfo(&item);
		for (; *p != '\0' && *p != ';'; p++)
		{
			if (*p == '\\' && (p[1] == ';' || p[1] == '\\'))
				p++;
			appendStringInfoChar(&item, *p);
		}
		if (*p == ';')
			p++;

		key = item.data;
		while (isspace((unsigned char) *key))
			key++;
		if (*key == '\0')
			continue;			/* an empty item, such as a trailing ";" */
		eq = strchr(key, '=');
		if (eq == NULL || eq == key)
		{
			ok = false;
			break;
		}
		*eq = '\0';
		for (char *end = eq - 1; end >= key && isspace((unsigned char) *end); end--)
			*end = '\0';
		if (*key == '\0')
		{
			ok = false;
			break;
		}
		ok = fn(key, eq + 1, arg);
	}
	pfree(item.data);
	return ok;
}

typedef struct PropertyLookup
{
	const char *key;
	char	   *value;
} PropertyLookup;

static bool
lookup_property(const char *key, const char *value, void *arg)
{
	PropertyLookup *l = arg;

	if (strcmp(key, l->key) == 0)
		l->value = pstrdup(value);	/* the last one wins, as in librdkafka */
	return true;
}

/* The value kafka_config gives a property (palloc'd), or NULL. */
char *
flyt_kafka_config_get(const char *key)
{
	PropertyLookup l = {key, NULL};

	(void) flyt_kafka_config_foreach(flyt_kafka_config, lookup_property, &l);
	return l.value;
}

typedef struct PropertyCheck
{
	rd_kafka_conf_t *conf;
	bool		rejected;
} PropertyCheck;

static bool
check_property(const char *key, const char *value, void *arg)
{
	PropertyCheck *c = arg;
	char		errstr[512];

	if (rd_kafka_conf_set(c->conf, key, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK)
		return true;
	GUC_check_errmsg("invalid value for parameter \"flyt_instance.kafka_config\"");
	/* librdkafka's message quotes the value: name the property only */
	GUC_check_errdetail("Property \"%s\" was rejected by librdkafka.", key);
	c->rejected = true;
	return false;
}

/*
 * Check hook of kafka_config: each property known to librdkafka and
 * accepted by it.  The value may hold secrets, so no message repeats it
 * (GUC's default message would); the statement that set it is kept out of
 * the log as well (see log_privacy.c).
 */
static bool
check_kafka_config(char **newval, void **extra, GucSource source)
{
	PropertyCheck c = {rd_kafka_conf_new(), false};
	bool		ok;

	ok = flyt_kafka_config_foreach(*newval, check_property, &c);
	rd_kafka_conf_destroy(c.conf);
	if (!ok && !c.rejected)
	{
		GUC_check_errmsg("invalid value for parameter \"flyt_instance.kafka_config\"");
		GUC_check_errdetail("Each property must be written as key=value.");
	}
	if (!ok)
		GUC_check_errhint("Write librdkafka properties as key=value separated by \";\", such as security.protocol=SASL_SSL;sasl.mechanism=PLAIN; write a \";\" or \"\\\" inside a value as \"\\;\" or \"\\\\\".");
	return ok;
}

/*
 * Check hook of authorized_org_id_role_pairs: a JSON object mapping each
 * organisation id to an array of role names.
 */
static bool
check_role_pairs(char **newval, void **extra, GucSource source)
{
	json_t	   *root;
	json_error_t error;
	const char *org;
	json_t	   *roles;
	bool		ok = true;

	if (*newval == NULL || **newval == '\0')
	{
		GUC_check_errdetail("The value must be a JSON object; use {} for none.");
		return false;
	}
	root = json_loads(*newval, JSON_REJECT_DUPLICATES, &error);
	if (root == NULL)
	{
		GUC_check_errdetail("The value is not valid JSON: %s at character %d.", error.text, error.position);
		GUC_check_errhint("Write a JSON object of organisation id to roles, such as {\"vigo.no\": [\"DEVELOPER\", \"USER\"]}.");
		return false;
	}
	if (!json_is_object(root))
	{
		GUC_check_errdetail("The value must be a JSON object, not a JSON %s.",
							json_is_array(root) ? "array" : "scalar");
		ok = false;
	}
	else
	{
		json_object_foreach(root, org, roles)
		{
			size_t		i;
			json_t	   *role;

			if (*org == '\0')
			{
				GUC_check_errdetail("An organisation id is empty.");
				ok = false;
				break;
			}
			if (!json_is_array(roles))
			{
				GUC_check_errdetail("The roles of \"%s\" must be a JSON array of role names.", org);
				ok = false;
				break;
			}
			json_array_foreach(roles, i, role)
			{
				bool		known = false;

				if (json_is_string(role))
				{
					for (size_t k = 0; k < lengthof(known_roles); k++)
						if (strcmp(json_string_value(role), known_roles[k]) == 0)
							known = true;
				}
				if (!known)
				{
					GUC_check_errdetail("Role %zu of \"%s\" is not one of DEVELOPER, ADMIN or USER.", i + 1, org);
					ok = false;
					break;
				}
			}
			if (!ok)
				break;
		}
	}
	json_decref(root);
	if (!ok)
		GUC_check_errhint("Write a JSON object of organisation id to roles, such as {\"vigo.no\": [\"DEVELOPER\", \"USER\"]}.");
	return ok;
}

/*
 * Defines every flyt_instance.* setting and reserves the prefix, so a typo
 * such as flyt_instance.org is an error instead of a silent no-op.
 */
void
flyt_define_settings(void)
{
	/*
	 * Only the postmaster can define a PGC_POSTMASTER setting; a backend that
	 * loads the library later (no preload, so no worker) still shows the
	 * value in flyt_status(), and cannot change it in a session either.
	 */
	DefineCustomStringVariable("flyt_instance.database",
							   "Database the flyt_instance background worker connects to.",
							   NULL,
							   &flyt_database,
							   "postgres",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   check_database, NULL, NULL);

	DefineCustomStringVariable("flyt_instance.kafka_bootstrap_servers",
							   "Kafka bootstrap servers (host:port,...); empty turns Kafka off and events wait in flyt.outbox.",
							   NULL,
							   &flyt_kafka_bootstrap_servers,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("flyt_instance.kafka_config",
							   "Extra librdkafka properties as key=value separated by semicolons (SASL/SSL).",
							   "Shown to superusers only, as it may hold secrets.",
							   &flyt_kafka_config,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_kafka_config, NULL, NULL);

	DefineCustomStringVariable("flyt_instance.org_id",
							   "FINT organisation id; topics are named {org_id with dots as dashes}.{domain_context}.event.{name}.",
							   NULL,
							   &flyt_org_id,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_org_id, NULL, NULL);

	DefineCustomStringVariable("flyt_instance.domain_context",
							   "Domain context part of the topic names.",
							   NULL,
							   &flyt_domain_context,
							   "flyt",
							   PGC_SIGHUP,
							   0,
							   check_domain_context, NULL, NULL);

	DefineCustomStringVariable("flyt_instance.application_id",
							   "Application id: the Kafka consumer group and client id.",
							   NULL,
							   &flyt_application_id,
							   "fint-flyt-instance-service",
							   PGC_SIGHUP,
							   0,
							   check_application_id, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.time_to_keep_instance_in_days",
							"Retention window: instances older than this many days are deleted by cleanup.",
							NULL,
							&flyt_time_to_keep_instance_in_days,
							60, 1, 36500,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("flyt_instance.instance_processing_events_retention_time",
							   "Retention of the produced topics (retention.ms), such as 4d, 96h, 30m, P4D or PT96H.",
							   NULL,
							   &retention_time_text,
							   "4d",
							   PGC_SIGHUP,
							   0,
							   check_positive_duration, assign_retention_time, NULL);

	DefineCustomStringVariable("flyt_instance.instance_processing_events_retention_time_ms",
							   "Retention of the produced topics in milliseconds; wins over instance_processing_events_retention_time when set.",
							   NULL,
							   &retention_time_ms_text,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_retention_time_ms, assign_retention_time_ms, NULL);

	DefineCustomStringVariable("flyt_instance.cleanup_interval",
							   "Time between two scheduled cleanup runs, such as 24h or PT24H.",
							   NULL,
							   &cleanup_interval_text,
							   "24h",
							   PGC_SIGHUP,
							   0,
							   check_positive_duration, assign_cleanup_interval, NULL);

	DefineCustomStringVariable("flyt_instance.cleanup_initial_delay",
							   "Time from worker start to the first cleanup run, such as 30s or PT30S.",
							   NULL,
							   &cleanup_initial_delay_text,
							   "30s",
							   PGC_SIGHUP,
							   0,
							   check_duration, assign_cleanup_initial_delay, NULL);

	DefineCustomIntVariable("flyt_instance.cleanup_batch_size",
							"Instances deleted per cleanup transaction.",
							NULL,
							&flyt_cleanup_batch_size,
							10000, 1, 10000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.redelivery_max_no",
							"Delivery attempts of an outbox message after the first, before it goes to flyt.dead_letter.",
							NULL,
							&flyt_redelivery_max_no,
							10, 0, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.redelivery_millis",
							"Wait before the first redelivery of a failed outbox message; doubles with each attempt, capped.",
							NULL,
							&flyt_redelivery_millis,
							1000, 1, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.max_in_flight",
							"Outbox messages handed to the producer and not yet acknowledged, at most.",
							NULL,
							&flyt_max_in_flight,
							10000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.max_in_flight_memory",
							"Size of the outbox messages handed to the producer and not yet acknowledged, at most.",
							"Key, value and headers, which the producer holds copies of until the broker acknowledges them; one message is sent however large it is.",
							&flyt_max_in_flight_memory_kb,
							4096, 64, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.consumer_assignment_grace",
							"How long the consumer may wait for partitions before flyt_status() reports DOWN.",
							"After a crash the group coordinator holds the old member's partitions until its session times out; keep this above session.timeout.ms.",
							&flyt_consumer_assignment_grace_s,
							60, 1, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("flyt_instance.authorized_org_id_role_pairs",
							   "JSON object of organisation id to the roles allowed to call the HTTP API, such as {\"vigo.no\": [\"DEVELOPER\", \"USER\"]}.",
							   NULL,
							   &flyt_authorized_org_id_role_pairs,
							   "{}",
							   PGC_SIGHUP,
							   0,
							   check_role_pairs, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.max_instance_bytes",
							"Largest instance accepted, as JSON text.",
							NULL,
							&flyt_max_instance_bytes,
							16 * 1024 * 1024, 1024, INT_MAX / 2,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("flyt_instance.error_event_format",
							 "Format of the error events: legacy (instance-registration-error and instance-retry-request-error with an ErrorCollection) or instance-error (one topic with an InstanceErrorEvent).",
							 "legacy is what every fint-flyt-history-service version reads; instance-error only history-service from 2026-07 on.",
							 &flyt_error_event_format,
							 FLYT_ERRORS_LEGACY,
							 error_event_format_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.topic_replication_factor",
							"Replication factor of the topics the worker creates; existing topics keep theirs.",
							NULL,
							&flyt_topic_replication_factor,
							2, 1, 32767,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("flyt_instance.flow_headers_timeout",
							"How long to wait for fint-flyt-history-service to answer a request for an instance's flow headers.",
							"The original waits 15 s.",
							&flyt_flow_headers_timeout_ms,
							15000, 100, 300000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("flyt_instance");
}
