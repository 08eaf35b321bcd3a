/*-------------------------------------------------------------------------
 *
 * admin.c
 *	  Provisioning of the worker's topics: "create or modify", as the Java
 *	  service's KafkaAdmin.createOrModifyTopics did (INTEROP.md section 4).
 *
 * The topics: the event topics instance-received, instance-registered,
 * instance-requested-for-retry and instance-deleted, the error topics of
 * flyt_instance.error_event_format, and the reply topic of the flow-headers
 * request.  Not instance-dispatched and not the request topic (others
 * create those), and not the authorization reply topic of the Java
 * service's resource-server library: flyt_instance never makes that request.
 *
 * A topic that does not exist is created with 1 partition, replication
 * factor flyt_instance.topic_replication_factor and cleanup.policy=delete,
 * retention.ms and segment.ms.  On a topic that exists, only those three
 * configs are changed, and only where they differ; partitions and
 * replication are never touched.  librdkafka 2.0 has no incremental
 * AlterConfigs, and AlterConfigs replaces a topic's whole dynamic
 * configuration, so the topic's configuration is read first
 * (DescribeConfigs) and every dynamic config written back with the
 * corrected ones.  A topic that is right already gets no AlterConfigs at all.
 *
 * Every request is asynchronous: results arrive on the admin queue, which
 * wakes the worker like its other queues.  A request the brokers do not
 * answer (all down, or no admin API: librdkafka's mock cluster, some
 * managed services) is reported once as a WARNING, is not an error, and is
 * made again 15 s later, so topics are provisioned once the brokers are up.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "admin.h"
#include "guc.h"
#include "outbox.h"

#define ADMIN_TIMEOUT_MS 10000
/* after a request the brokers did not answer (down, or no admin API) */
#define ADMIN_RETRY_MS 15000

/* Event topics: EventCleanupFrequency.NORMAL, segment.ms 12 h. */
#define EVENT_SEGMENT_MS INT64CONST(43200000)
/* The reply topic: retention 5 days, SEGMENT_DURATION 6 h (ReplyTopicService). */
#define REPLY_RETENTION_MS INT64CONST(432000000)
#define REPLY_SEGMENT_MS INT64CONST(21600000)

#define MAX_TOPICS (FLYT_PRODUCED_TOPICS + 2)	/* received, produced, reply */
#define NUM_WANTED_CONFIGS 3

/* One topic as it should be. */
typedef struct WantedTopic
{
	char	   *name;
	char		retention_ms[24];
	char		segment_ms[24];
} WantedTopic;

static const char *const wanted_config_names[NUM_WANTED_CONFIGS] = {
	"cleanup.policy", "retention.ms", "segment.ms"
};

static const char *
wanted_value(const WantedTopic *topic, int i)
{
	switch (i)
	{
		case 0:
			return "delete";
		case 1:
			return topic->retention_ms;
		default:
			return topic->segment_ms;
	}
}

static void
add_topic(WantedTopic *topics, int *n, char *name, int64 retention_ms, int64 segment_ms)
{
	Assert(*n < MAX_TOPICS);
	topics[*n].name = name;
	snprintf(topics[*n].retention_ms, sizeof(topics[*n].retention_ms), INT64_FORMAT, retention_ms);
	snprintf(topics[*n].segment_ms, sizeof(topics[*n].segment_ms), INT64_FORMAT, segment_ms);
	(*n)++;
}

/* The topics to provision with the current settings; returns their number. */
static int
wanted_topics(WantedTopic *topics)
{
	int64		retention = flyt_topic_retention_ms();
	char	   *produced[FLYT_PRODUCED_TOPICS];
	int			nproduced = flyt_produced_topics(produced);
	int			n = 0;

	add_topic(topics, &n, flyt_topic_name(FLYT_EVENT_RECEIVED), retention, EVENT_SEGMENT_MS);
	for (int i = 0; i < nproduced; i++)
		add_topic(topics, &n, produced[i], retention, EVENT_SEGMENT_MS);
	add_topic(topics, &n, flyt_reply_topic_name(), REPLY_RETENTION_MS, REPLY_SEGMENT_MS);
	return n;
}

static void
free_topics(WantedTopic *topics, int n)
{
	for (int i = 0; i < n; i++)
		pfree(topics[i].name);
}

static const WantedTopic *
find_topic(const WantedTopic *topics, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(topics[i].name, name) == 0)
			return &topics[i];
	return NULL;
}

static rd_kafka_AdminOptions_t *
admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op)
{
	rd_kafka_AdminOptions_t *options = rd_kafka_AdminOptions_new(rk, op);
	char		errstr[256];

	(void) rd_kafka_AdminOptions_set_request_timeout(options, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr));
	if (op != RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS)
		(void) rd_kafka_AdminOptions_set_operation_timeout(options, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr));
	return options;
}

/*
 * A request the brokers did not answer: provision again later, and report
 * it once per worker.
 */
static void
admin_unavailable(FlytAdmin *admin, const char *what, const char *why)
{
	admin->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ADMIN_RETRY_MS);
	if (admin->warned)
		return;
	admin->warned = true;
	ereport(WARNING,
			(errmsg("flyt_instance: the Kafka brokers did not answer %s; topics are not provisioned yet", what),
			 errdetail_internal("%s", why),
			 errhint("Create the topics yourself (1 partition, cleanup.policy=delete, retention.ms = %lld, segment.ms = %lld; see docs/worker.md), or use brokers that support the admin API.",
					 (long long) flyt_topic_retention_ms(), (long long) EVENT_SEGMENT_MS)));
}

/*
 * Whether a setting that provisioning depends on changed since it last ran
 * (a reload), so that a new retention reaches every topic, or the brokers
 * did not answer it: then the worker provisions again.
 */
bool
flyt_admin_outdated(const FlytAdmin *admin)
{
	return admin->retention_ms != flyt_topic_retention_ms() ||
		admin->error_event_format != flyt_error_event_format ||
		admin->replication_factor != flyt_topic_replication_factor ||
		(admin->retry_at != 0 && GetCurrentTimestamp() >= admin->retry_at);
}

/* Asks the brokers to create every topic; the ones that exist are checked next. */
void
flyt_admin_provision(FlytAdmin *admin, rd_kafka_t *rk, rd_kafka_queue_t *queue)
{
	WantedTopic wanted[MAX_TOPICS];
	rd_kafka_NewTopic_t *topics[MAX_TOPICS];
	int			n;
	char		errstr[256];
	rd_kafka_AdminOptions_t *options;

	admin->retention_ms = flyt_topic_retention_ms();
	admin->error_event_format = flyt_error_event_format;
	admin->replication_factor = flyt_topic_replication_factor;
	admin->retry_at = 0;
	n = wanted_topics(wanted);
	for (int i = 0; i < n; i++)
	{
		topics[i] = rd_kafka_NewTopic_new(wanted[i].name, 1, admin->replication_factor,
										  errstr, sizeof(errstr));
		if (topics[i] == NULL)
		{
			ereport(WARNING,
					(errmsg("flyt_instance: could not describe topic %s to create", wanted[i].name),
					 errdetail_internal("%s", errstr)));
			rd_kafka_NewTopic_destroy_array(topics, i);
			free_topics(wanted, n);
			return;
		}
		for (int k = 0; k < NUM_WANTED_CONFIGS; k++)
			(void) rd_kafka_NewTopic_set_config(topics[i], wanted_config_names[k],
												wanted_value(&wanted[i], k));
	}
	options = admin_options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	/* its answer tells the producer its topics only when it is the latest */
	rd_kafka_AdminOptions_set_opaque(options, (void *) (intptr_t) ++admin->asked);
	rd_kafka_CreateTopics(rk, topics, n, options, queue);
	rd_kafka_AdminOptions_destroy(options);
	rd_kafka_NewTopic_destroy_array(topics, n);
	free_topics(wanted, n);
}

/* Is name one of the n names? */
static bool
among(const char *name, char **names, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/*
 * Reports each topic's creation; asks for the configuration of those that
 * exist.  When this answers the latest request, gives the producer the
 * topics it sends to that were created or found, or that the worker may
 * not create (flyt_kafka_know_topics); not one whose creation failed
 * otherwise, nor any before the answer: librdkafka's lookup of a topic
 * may create it with the brokers' defaults.
 */
static void
created(FlytAdmin *admin, FlytKafka *kafka, rd_kafka_event_t *ev)
{
	size_t		n;
	const rd_kafka_topic_result_t **results =
		rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
	rd_kafka_ConfigResource_t *resources[MAX_TOPICS];
	size_t		count = 0;
	rd_kafka_AdminOptions_t *options;
	bool		latest = (intptr_t) rd_kafka_event_opaque(ev) == admin->asked;
	char	   *produced[FLYT_PRODUCED_TOPICS];
	int			nproduced = latest ? flyt_produced_topics(produced) : 0;
	const char *ready[FLYT_PRODUCED_TOPICS];
	int			nready = 0;

	for (size_t i = 0; i < n; i++)
	{
		const char *name = rd_kafka_topic_result_name(results[i]);
		rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);

		/*
		 * Created or there; or not ours to create, when a lookup may not
		 * create it either (the brokers ask the same permission).
		 */
		if ((err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS ||
			 err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) &&
			nready < FLYT_PRODUCED_TOPICS && among(name, produced, nproduced))
			ready[nready++] = name;
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
			ereport(LOG,
					(errmsg("flyt_instance: created topic %s", name),
					 errdetail("1 partition, replication factor %d.", admin->replication_factor)));
		else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
		{
			if (count < MAX_TOPICS)
				resources[count++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
		}
		else if (err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ||
				 err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION)
			admin_unavailable(admin, "CreateTopics", rd_kafka_topic_result_error_string(results[i]));
		else
			ereport(WARNING,
					(errmsg("flyt_instance: could not create topic %s", name),
					 errdetail_internal("%s", rd_kafka_topic_result_error_string(results[i])),
					 err == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR ?
					 errhint("flyt_instance.topic_replication_factor is %d; it must not exceed the number of brokers.",
							 admin->replication_factor) : 0));
	}
	if (latest)
		flyt_kafka_know_topics(kafka, ready, nready);
	for (int i = 0; i < nproduced; i++)
		pfree(produced[i]);
	if (count == 0)
		return;
	options = admin_options(kafka->producer, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
	rd_kafka_DescribeConfigs(kafka->producer, resources, count, options, kafka->admin_queue);
	rd_kafka_AdminOptions_destroy(options);
	rd_kafka_ConfigResource_destroy_array(resources, count);
}

/*
 * The configuration to write to an existing topic, or NULL when it is right
 * already (or cannot be written back).  *changes says what changes.
 */
static rd_kafka_ConfigResource_t *
corrected(const rd_kafka_ConfigResource_t *described, const WantedTopic *topic,
		  StringInfo changes)
{
	const char *name = rd_kafka_ConfigResource_name(described);
	const rd_kafka_ConfigEntry_t **entries;
	size_t		nentries;
	const char *current[NUM_WANTED_CONFIGS] = {NULL, NULL, NULL};
	bool		dynamic[NUM_WANTED_CONFIGS] = {false, false, false};
	const char *unwritable = NULL;
	rd_kafka_ConfigResource_t *r;

	entries = rd_kafka_ConfigResource_configs(described, &nentries);
	for (size_t i = 0; i < nentries; i++)
	{
		const char *key = rd_kafka_ConfigEntry_name(entries[i]);
		bool		is_dynamic = rd_kafka_ConfigEntry_source(entries[i]) ==
			RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG;
		int			k;

		for (k = 0; k < NUM_WANTED_CONFIGS; k++)
			if (strcmp(key, wanted_config_names[k]) == 0)
				break;
		if (k < NUM_WANTED_CONFIGS)
		{
			current[k] = rd_kafka_ConfigEntry_value(entries[i]);
			dynamic[k] = is_dynamic;
		}
		else if (is_dynamic && unwritable == NULL &&
				 (rd_kafka_ConfigEntry_is_sensitive(entries[i]) ||
				  rd_kafka_ConfigEntry_value(entries[i]) == NULL))
			unwritable = key;
	}

	/* as Spring's KafkaAdmin: a config differs when its value in effect does */
	for (int k = 0; k < NUM_WANTED_CONFIGS; k++)
		if (current[k] == NULL || strcmp(current[k], wanted_value(topic, k)) != 0)
			appendStringInfo(changes, "%s%s %s -> %s", changes->len > 0 ? ", " : "",
							 wanted_config_names[k], current[k] ? current[k] : "(none)",
							 wanted_value(topic, k));
	if (changes->len == 0)
		return NULL;
	if (unwritable != NULL)
	{
		/* AlterConfigs would wipe the config whose value we cannot read */
		ereport(WARNING,
				(errmsg("flyt_instance: topic %s is not reconfigured: its config %s is sensitive and cannot be written back",
						name, unwritable),
				 errdetail("Needed: %s.  librdkafka 2.0 has no incremental AlterConfigs, and AlterConfigs replaces every dynamic config of a topic.",
						   changes->data),
				 errhint("Set cleanup.policy, retention.ms and segment.ms on the topic with kafka-configs --alter --add-config.")));
		return NULL;
	}

	r = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
	for (size_t i = 0; i < nentries; i++)
	{
		const char *key = rd_kafka_ConfigEntry_name(entries[i]);
		bool		wanted = false;

		for (int k = 0; k < NUM_WANTED_CONFIGS; k++)
			wanted |= strcmp(key, wanted_config_names[k]) == 0;
		if (!wanted &&
			rd_kafka_ConfigEntry_source(entries[i]) == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG)
			(void) rd_kafka_ConfigResource_set_config(r, key, rd_kafka_ConfigEntry_value(entries[i]));
	}
	/* a wanted config is set when it differs, and kept when it is the topic's own */
	for (int k = 0; k < NUM_WANTED_CONFIGS; k++)
		if (dynamic[k] || current[k] == NULL || strcmp(current[k], wanted_value(topic, k)) != 0)
			(void) rd_kafka_ConfigResource_set_config(r, wanted_config_names[k],
													  wanted_value(topic, k));
	return r;
}

/* Writes the corrected configuration of each existing topic that needs it. */
static void
described(rd_kafka_t *rk, rd_kafka_queue_t *queue, rd_kafka_event_t *ev)
{
	size_t		n;
	const rd_kafka_ConfigResource_t **resources =
		rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
	WantedTopic wanted[MAX_TOPICS];
	int			nwanted = wanted_topics(wanted);
	rd_kafka_ConfigResource_t *alter[MAX_TOPICS];
	size_t		count = 0;
	StringInfoData changes;
	StringInfoData right;
	int			nright = 0;
	rd_kafka_AdminOptions_t *options;

	initStringInfo(&changes);
	initStringInfo(&right);
	for (size_t i = 0; i < n && count < MAX_TOPICS; i++)
	{
		const char *name = rd_kafka_ConfigResource_name(resources[i]);
		const WantedTopic *topic = find_topic(wanted, nwanted, name);
		rd_kafka_ConfigResource_t *r;

		if (rd_kafka_ConfigResource_error(resources[i]) != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			ereport(WARNING,
					(errmsg("flyt_instance: could not read the configuration of topic %s", name),
					 errdetail_internal("%s", rd_kafka_ConfigResource_error_string(resources[i]))));
			continue;
		}
		if (topic == NULL)
			continue;			/* no longer wanted: the settings changed meanwhile */
		resetStringInfo(&changes);
		r = corrected(resources[i], topic, &changes);
		if (r == NULL)
		{
			if (changes.len == 0)
				appendStringInfo(&right, "%s%s", nright++ > 0 ? ", " : "", name);
			continue;
		}
		ereport(LOG,
				(errmsg("flyt_instance: changing the configuration of topic %s", name),
				 errdetail("%s.", changes.data)));
		alter[count++] = r;
	}
	/* also says that this round of provisioning sent all it had to */
	if (nright > 0)
		ereport(LOG,
				(errmsg_plural("flyt_instance: %d existing topic has the wanted configuration already",
							   "flyt_instance: %d existing topics have the wanted configuration already",
							   nright, nright),
				 errdetail("Not changed: %s.", right.data)));
	pfree(changes.data);
	pfree(right.data);
	free_topics(wanted, nwanted);
	if (count == 0)
		return;
	options = admin_options(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS);
	rd_kafka_AlterConfigs(rk, alter, count, options, queue);
	rd_kafka_AdminOptions_destroy(options);
	rd_kafka_ConfigResource_destroy_array(alter, count);
}

/* Reports each topic's reconfiguration. */
static void
altered(rd_kafka_event_t *ev)
{
	size_t		n;
	const rd_kafka_ConfigResource_t **resources =
		rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &n);

	for (size_t i = 0; i < n; i++)
	{
		const char *name = rd_kafka_ConfigResource_name(resources[i]);

		if (rd_kafka_ConfigResource_error(resources[i]) == RD_KAFKA_RESP_ERR_NO_ERROR)
			ereport(LOG,
					(errmsg("flyt_instance: changed the configuration of topic %s", name)));
		else
			ereport(WARNING,
					(errmsg("flyt_instance: could not change the configuration of topic %s", name),
					 errdetail_internal("%s", rd_kafka_ConfigResource_error_string(resources[i]))));
	}
}

/* Handles the admin results that arrived; never waits. */
void
flyt_admin_serve(FlytAdmin *admin, FlytKafka *kafka)
{
	rd_kafka_t *rk = kafka->producer;
	rd_kafka_queue_t *queue = kafka->admin_queue;
	rd_kafka_event_t *ev;

	while ((ev = rd_kafka_queue_poll(queue, 0)) != NULL)
	{
		rd_kafka_resp_err_t err = rd_kafka_event_error(ev);

		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
			admin_unavailable(admin, rd_kafka_event_name(ev),
							  psprintf("%s: %s", rd_kafka_err2name(err), rd_kafka_event_error_string(ev)));
		else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT)
			created(admin, kafka, ev);
		else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT)
			described(rk, queue, ev);
		else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ALTERCONFIGS_RESULT)
			altered(ev);
		rd_kafka_event_destroy(ev);
	}
}
