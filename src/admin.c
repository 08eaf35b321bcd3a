/*-------------------------------------------------------------------------
 *
 * admin.c
 *	  Provisioning of the produced topics: "create or modify".
 *
 * As the Java service did, the worker creates each topic it produces to
 * (one partition, retention.ms from the retention setting) and, where the
 * topic exists, sets its retention.ms.  librdkafka 2.0 has no incremental
 * AlterConfigs, and AlterConfigs replaces a topic's whole dynamic
 * configuration, so the existing dynamic settings are read first
 * (DescribeConfigs) and written back with the new retention.ms.
 *
 * Every request is asynchronous: results arrive on the admin queue, which
 * wakes the worker like its other queues.  A broker that does not answer
 * the admin API (librdkafka's mock cluster, some managed services) is
 * reported once as a WARNING and is not an error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "admin.h"
#include "guc.h"
#include "outbox.h"

#define ADMIN_TIMEOUT_MS 10000

static const char *const produced_events[] = {
	FLYT_EVENT_REGISTERED,
	FLYT_EVENT_RETRY,
	FLYT_EVENT_DELETED,
	FLYT_EVENT_REGISTRATION_ERROR,
	FLYT_EVENT_RETRY_REQUEST_ERROR
};

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

/* Reports that the admin API is not available, once per worker. */
static void
admin_unavailable(FlytAdmin *admin, const char *what, const char *why)
{
	if (admin->warned)
		return;
	admin->warned = true;
	ereport(WARNING,
			(errmsg("flyt_instance: the Kafka brokers did not answer %s; topic retention is not managed", what),
			 errdetail_internal("%s", why),
			 errhint("Create the produced topics with retention.ms = %lld yourself, or use brokers that support the admin API.",
					 (long long) flyt_topic_retention_ms())));
}

/* Asks the brokers to create every produced topic. */
void
flyt_admin_provision(FlytAdmin *admin, rd_kafka_t *rk, rd_kafka_queue_t *queue)
{
	rd_kafka_NewTopic_t *topics[lengthof(produced_events)];
	char		retention[32];
	char		errstr[256];
	rd_kafka_AdminOptions_t *options;

	admin->retention_ms = flyt_topic_retention_ms();
	snprintf(retention, sizeof(retention), "%lld", (long long) admin->retention_ms);
	for (size_t i = 0; i < lengthof(produced_events); i++)
	{
		topics[i] = rd_kafka_NewTopic_new(flyt_topic_name(produced_events[i]), 1, -1,
										  errstr, sizeof(errstr));
		if (topics[i] == NULL)
		{
			for (size_t k = 0; k < i; k++)
				rd_kafka_NewTopic_destroy(topics[k]);
			ereport(WARNING,
					(errmsg("flyt_instance: could not describe a topic to create"),
					 errdetail_internal("%s", errstr)));
			return;
		}
		(void) rd_kafka_NewTopic_set_config(topics[i], "retention.ms", retention);
	}
	options = admin_options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	rd_kafka_CreateTopics(rk, topics, lengthof(produced_events), options, queue);
	rd_kafka_AdminOptions_destroy(options);
	rd_kafka_NewTopic_destroy_array(topics, lengthof(produced_events));
}

/* Topics that exist already: read their dynamic configuration first. */
static void
describe_existing(rd_kafka_t *rk, rd_kafka_queue_t *queue, const rd_kafka_topic_result_t **results,
				  size_t n)
{
	rd_kafka_ConfigResource_t *resources[lengthof(produced_events)];
	size_t		count = 0;
	rd_kafka_AdminOptions_t *options;

	for (size_t i = 0; i < n && count < lengthof(produced_events); i++)
		if (rd_kafka_topic_result_error(results[i]) == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
			resources[count++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC,
															 rd_kafka_topic_result_name(results[i]));
	if (count == 0)
		return;
	options = admin_options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
	rd_kafka_DescribeConfigs(rk, resources, count, options, queue);
	rd_kafka_AdminOptions_destroy(options);
	rd_kafka_ConfigResource_destroy_array(resources, count);
}

/* Writes back each topic's dynamic configuration with the new retention.ms. */
static void
alter_retention(FlytAdmin *admin, rd_kafka_t *rk, rd_kafka_queue_t *queue,
				const rd_kafka_ConfigResource_t **described, size_t n)
{
	rd_kafka_ConfigResource_t *resources[lengthof(produced_events)];
	size_t		count = 0;
	char		retention[32];
	rd_kafka_AdminOptions_t *options;

	snprintf(retention, sizeof(retention), "%lld", (long long) admin->retention_ms);
	for (size_t i = 0; i < n && count < lengthof(produced_events); i++)
	{
		const rd_kafka_ConfigEntry_t **entries;
		size_t		nentries;
		rd_kafka_ConfigResource_t *r;

		if (rd_kafka_ConfigResource_error(described[i]) != RD_KAFKA_RESP_ERR_NO_ERROR)
			continue;
		r = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, rd_kafka_ConfigResource_name(described[i]));
		entries = rd_kafka_ConfigResource_configs(described[i], &nentries);
		for (size_t k = 0; k < nentries; k++)
		{
			const char *name = rd_kafka_ConfigEntry_name(entries[k]);
			const char *value = rd_kafka_ConfigEntry_value(entries[k]);

			if (rd_kafka_ConfigEntry_source(entries[k]) == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG &&
				!rd_kafka_ConfigEntry_is_sensitive(entries[k]) && value != NULL &&
				strcmp(name, "retention.ms") != 0)
				(void) rd_kafka_ConfigResource_set_config(r, name, value);
		}
		(void) rd_kafka_ConfigResource_set_config(r, "retention.ms", retention);
		resources[count++] = r;
	}
	if (count == 0)
		return;
	options = admin_options(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS);
	rd_kafka_AlterConfigs(rk, resources, count, options, queue);
	rd_kafka_AdminOptions_destroy(options);
	rd_kafka_ConfigResource_destroy_array(resources, count);
}

/* Handles the admin results that arrived; never waits. */
void
flyt_admin_serve(FlytAdmin *admin, rd_kafka_t *rk, rd_kafka_queue_t *queue)
{
	rd_kafka_event_t *ev;

	while ((ev = rd_kafka_queue_poll(queue, 0)) != NULL)
	{
		rd_kafka_resp_err_t err = rd_kafka_event_error(ev);

		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
			admin_unavailable(admin, rd_kafka_event_name(ev), rd_kafka_event_error_string(ev));
		else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT)
		{
			size_t		n;
			const rd_kafka_topic_result_t **results =
				rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);

			for (size_t i = 0; i < n; i++)
			{
				rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(results[i]);

				if (terr == RD_KAFKA_RESP_ERR_NO_ERROR)
					ereport(LOG,
							(errmsg("flyt_instance: created topic %s", rd_kafka_topic_result_name(results[i]))));
				else if (terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
					admin_unavailable(admin, "CreateTopics", rd_kafka_topic_result_error_string(results[i]));
			}
			describe_existing(rk, queue, results, n);
		}
		else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT)
		{
			size_t		n;
			const rd_kafka_ConfigResource_t **described =
				rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);

			alter_retention(admin, rk, queue, described, n);
		}
		else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ALTERCONFIGS_RESULT)
		{
			size_t		n;
			const rd_kafka_ConfigResource_t **altered =
				rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &n);

			for (size_t i = 0; i < n; i++)
			{
				if (rd_kafka_ConfigResource_error(altered[i]) == RD_KAFKA_RESP_ERR_NO_ERROR)
					ereport(LOG,
							(errmsg("flyt_instance: set retention.ms = %lld on topic %s",
									(long long) admin->retention_ms,
									rd_kafka_ConfigResource_name(altered[i]))));
				else
					admin_unavailable(admin, "AlterConfigs",
									  rd_kafka_ConfigResource_error_string(altered[i]));
			}
		}
		rd_kafka_event_destroy(ev);
	}
}
