/*-------------------------------------------------------------------------
 *
 * kafka.c
 *	  librdkafka handles of the background worker.
 *
 * librdkafka runs threads of its own; none of them may call into
 * PostgreSQL.  Everything they report (delivery reports, rebalances, errors,
 * statistics and logs) goes to queues that the worker serves on its own
 * thread, and each queue writes a byte to a pipe when it becomes non-empty,
 * so the worker can sleep in its WaitEventSet instead of polling.
 *
 * Logs are even further removed from librdkafka: the log callback only
 * copies the line into a small ring, and flyt_kafka_serve_logs() reports
 * the ring after librdkafka has returned, so an ereport can never unwind
 * through librdkafka's frames.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "kafka.h"

/*
 * How long the producer gathers messages into one request unless
 * flyt_instance.kafka_config says otherwise (see bench/RESULTS.md): the
 * pump's window (max_in_flight) bounds a batch anyway, so a longer wait
 * only holds each window back; librdkafka's 5 ms gave the pump 92,000
 * messages/s on the embedded broker and retries 6.2 ms p50 to the broker,
 * 1 ms 126,000 and 2.8 ms, 0 ms (a request per message) 80,000.
 */
#define DEFAULT_LINGER_MS "1"

/* Lines the log callback keeps until the worker reports them. */
#define LOG_RING 256
#define LOG_LINE 512

typedef struct LogLine
{
	int			level;
	char		text[LOG_LINE];
} LogLine;

static LogLine log_ring[LOG_RING];
static int	log_count = 0;
static int	log_dropped = 0;

/* The last line reported, to keep a broker outage from flooding the log. */
static char last_line[LOG_LINE];
static TimestampTz last_line_at = 0;
static int	last_line_repeats = 0;

#define REPEAT_QUIET_SECS 60

/* Called on the worker's thread, while a queue is served: copy only. */
static void
log_callback(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (log_count >= LOG_RING)
	{
		log_dropped++;
		return;
	}
	log_ring[log_count].level = level;
	snprintf(log_ring[log_count].text, LOG_LINE, "%s: %s", fac, buf);
	log_count++;
}

/*
 * Reports the lines librdkafka logged since the last call.  syslog levels
 * 0-4 (emergency to warning) become LOG, the rest DEBUG1; a line repeated
 * within a minute is counted, not repeated.
 */
void
flyt_kafka_serve_logs(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < log_count; i++)
	{
		LogLine    *line = &log_ring[i];
		int			elevel = line->level <= 4 ? LOG : DEBUG1;

		/* the shared properties apply to one of the two handles only */
		if (strstr(line->text, "will be ignored by this") != NULL)
			elevel = DEBUG1;

		if (strcmp(line->text, last_line) == 0 &&
			!TimestampDifferenceExceeds(last_line_at, now, REPEAT_QUIET_SECS * 1000))
		{
			last_line_repeats++;
			continue;
		}
		if (last_line_repeats > 0)
			ereport(LOG,
					(errmsg("flyt_instance: librdkafka repeated the last line %d times", last_line_repeats)));
		ereport(elevel,
				(errmsg("flyt_instance: librdkafka: %s", line->text)));
		strlcpy(last_line, line->text, LOG_LINE);
		last_line_at = now;
		last_line_repeats = 0;
	}
	if (log_dropped > 0)
		ereport(LOG,
				(errmsg("flyt_instance: %d librdkafka log lines were dropped", log_dropped)));
	log_count = 0;
	log_dropped = 0;
}

/*
 * The settings that shape the handles; when this string changes on reload,
 * the worker makes new handles.
 */
char *
flyt_kafka_settings_signature(void)
{
	return psprintf("%s|%s|%s|%s|%s", flyt_kafka_bootstrap_servers, flyt_kafka_config,
					flyt_application_id, flyt_org_id, flyt_domain_context);
}

/* Sets one property; false (with a LOG naming the property) when rejected. */
static bool
set_property(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char		errstr[512];

	/* librdkafka's message quotes the value, which may be a secret: not logged */
	if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		ereport(LOG,
				(errmsg("flyt_instance: librdkafka rejected the value of property \"%s\"", key)));
		return false;
	}
	return true;
}

static bool
apply_property(const char *key, const char *value, void *arg)
{
	return set_property((rd_kafka_conf_t *) arg, key, value);
}

/* Applies flyt_instance.kafka_config (see flyt_kafka_config_foreach). */
static bool
set_user_properties(rd_kafka_conf_t *conf)
{
	return flyt_kafka_config_foreach(flyt_kafka_config, apply_property, conf);
}

/* Does kafka_config set this property? */
static bool
user_sets(const char *key)
{
	char	   *value = flyt_kafka_config_get(key);

	if (value == NULL)
		return false;
	pfree(value);
	return true;
}

/*
 * Static group membership (KIP-345): the consumer joins as
 * "<application_id>-<system identifier>", the same after every restart of
 * the worker or the server, and on a standby promoted in its place (physical
 * replicas share the system identifier).  A restarted worker then takes
 * back its partitions at once, instead of waiting for the coordinator to
 * time out the member it was before (session.timeout.ms, 45 s by default)
 * and rebalance.  group.instance.id in kafka_config wins.
 */
static bool
set_static_membership(rd_kafka_conf_t *conf)
{
	char	   *id;
	bool		ok;

	if (user_sets("group.instance.id"))
		return true;
	id = psprintf("%s-" UINT64_FORMAT, flyt_application_id, GetSystemIdentifier());
	ok = set_property(conf, "group.instance.id", id);
	pfree(id);
	return ok;
}

/*
 * The configuration both handles share: servers, identity, the user's
 * properties, logs on a queue and statistics (the worker learns from them
 * whether brokers are up and how far behind the consumer is).
 */
static rd_kafka_conf_t *
base_conf(const FlytKafkaCallbacks *callbacks, void *opaque)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	bool		ok;

	ok = set_property(conf, "bootstrap.servers", flyt_kafka_bootstrap_servers) &&
		set_property(conf, "client.id", flyt_application_id) &&
		set_property(conf, "log.queue", "true") &&
		set_property(conf, "statistics.interval.ms", "1000") &&
		set_user_properties(conf);
	if (!ok)
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_opaque(conf, opaque);
	rd_kafka_conf_set_log_cb(conf, log_callback);
	rd_kafka_conf_set_error_cb(conf, callbacks->error);
	rd_kafka_conf_set_stats_cb(conf, callbacks->stats);
	return conf;
}

/*
 * Makes one handle from conf (which it takes over), or NULL with a LOG.
 * librdkafka's threads start here and inherit the signal mask: with every
 * signal blocked, PostgreSQL's handlers only ever run on the worker's own
 * thread.
 */
static rd_kafka_t *
new_handle(rd_kafka_type_t type, rd_kafka_conf_t *conf)
{
	char		errstr[512];
	sigset_t	all;
	sigset_t	old;
	rd_kafka_t *rk;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(LOG,
				(errmsg("flyt_instance: could not create the Kafka %s",
						type == RD_KAFKA_PRODUCER ? "producer" : "consumer"),
				 errdetail_internal("%s", errstr)));
	}
	return rk;
}

/* Lets go of the producer's topic handles. */
static void
forget_topics(FlytKafka *kafka)
{
	for (int i = 0; i < kafka->ntopics; i++)
		rd_kafka_topic_destroy(kafka->topics[i]);
	kafka->ntopics = 0;
}

/*
 * Gives the producer a handle of each of the n topics, and of no other, so
 * that librdkafka looks up their partitions and leaders right away and
 * keeps them: a topic it first hears of from a message is looked up only at
 * its next scan of unknown topics (once a second), with the message
 * waiting; against Apache Kafka the first message to each topic after
 * every connect waited 0.4-1.2 s.  The admin calls it with the topics the
 * worker sends to that the brokers' answer to their creation says exist
 * (admin.c: a lookup of a topic that does not may create it with the
 * brokers' defaults).  Messages sent before that answer (a backlog at
 * connect) still wait for the scan.  Nothing changes when the producer has
 * handles of just these topics already.
 */
void
flyt_kafka_know_topics(FlytKafka *kafka, const char *const *names, int n)
{
	bool		same;

	Assert(n <= FLYT_PRODUCED_TOPICS);
	if (kafka->producer == NULL)
		return;
	same = n == kafka->ntopics;
	for (int i = 0; same && i < n; i++)
		same = strcmp(rd_kafka_topic_name(kafka->topics[i]), names[i]) == 0;
	if (same)
		return;
	forget_topics(kafka);
	for (int i = 0; i < n && i < FLYT_PRODUCED_TOPICS; i++)
	{
		rd_kafka_topic_t *topic = rd_kafka_topic_new(kafka->producer, names[i], NULL);

		/* NULL for a name librdkafka refuses: messages to it fail alike */
		if (topic != NULL)
			kafka->topics[kafka->ntopics++] = topic;
	}
}

/*
 * Creates the producer and the consumer and the pipe their queues wake the
 * worker through.  Returns false (having logged why) when the settings do
 * not make working handles; nothing is left allocated then.
 */
bool
flyt_kafka_open(FlytKafka *kafka, const FlytKafkaCallbacks *callbacks, void *opaque)
{
	rd_kafka_conf_t *conf;
	int			fds[2];

	memset(kafka, 0, sizeof(*kafka));
	kafka->wake_read_fd = kafka->wake_write_fd = -1;

	if (pipe(fds) != 0)
	{
		ereport(LOG, (errmsg("flyt_instance: could not create a pipe: %m")));
		return false;
	}
	for (int i = 0; i < 2; i++)
	{
		(void) fcntl(fds[i], F_SETFL, O_NONBLOCK);
		(void) fcntl(fds[i], F_SETFD, FD_CLOEXEC);
	}
	kafka->wake_read_fd = fds[0];
	kafka->wake_write_fd = fds[1];

	/* Producer: idempotent, every replica acknowledges, in order. */
	conf = base_conf(callbacks, opaque);
	if (conf == NULL)
		goto fail;
	if (!set_property(conf, "enable.idempotence", "true") ||
		!set_property(conf, "acks", "all") ||
		(!user_sets("linger.ms") && !user_sets("queue.buffering.max.ms") &&
		 !set_property(conf, "linger.ms", DEFAULT_LINGER_MS)))
	{
		rd_kafka_conf_destroy(conf);
		goto fail;
	}
	/*
	 * librdkafka's default of five minutes before a message times out would
	 * hold a half-open circuit's probe that long; the user may still choose.
	 */
	if (!user_sets("message.timeout.ms") && !user_sets("delivery.timeout.ms") &&
		!set_property(conf, "message.timeout.ms", "30000"))
	{
		rd_kafka_conf_destroy(conf);
		goto fail;
	}
	rd_kafka_conf_set_dr_msg_cb(conf, callbacks->delivery);
	kafka->producer = new_handle(RD_KAFKA_PRODUCER, conf);
	if (kafka->producer == NULL)
		goto fail;
	kafka->producer_queue = rd_kafka_queue_get_main(kafka->producer);
	rd_kafka_set_log_queue(kafka->producer, kafka->producer_queue);
	rd_kafka_queue_io_event_enable(kafka->producer_queue, kafka->wake_write_fd, "p", 1);
	kafka->admin_queue = rd_kafka_queue_new(kafka->producer);
	rd_kafka_queue_io_event_enable(kafka->admin_queue, kafka->wake_write_fd, "a", 1);

	/*
	 * Consumer: the database holds the offsets (flyt.consumer_offset), so
	 * nothing is committed or stored automatically.
	 */
	conf = base_conf(callbacks, opaque);
	if (conf == NULL)
		goto fail;
	if (!set_property(conf, "group.id", flyt_application_id) ||
		!set_static_membership(conf) ||
		!set_property(conf, "enable.auto.commit", "false") ||
		!set_property(conf, "enable.auto.offset.store", "false") ||
		!set_property(conf, "auto.offset.reset", "earliest") ||
		!set_property(conf, "enable.partition.eof", "false"))
	{
		rd_kafka_conf_destroy(conf);
		goto fail;
	}
	rd_kafka_conf_set_rebalance_cb(conf, callbacks->rebalance);
	kafka->consumer = new_handle(RD_KAFKA_CONSUMER, conf);
	if (kafka->consumer == NULL)
		goto fail;
	rd_kafka_poll_set_consumer(kafka->consumer);
	kafka->consumer_queue = rd_kafka_queue_get_consumer(kafka->consumer);
	rd_kafka_set_log_queue(kafka->consumer, kafka->consumer_queue);
	rd_kafka_queue_io_event_enable(kafka->consumer_queue, kafka->wake_write_fd, "c", 1);

	kafka->settings = MemoryContextStrdup(TopMemoryContext, flyt_kafka_settings_signature());
	return true;

fail:
	flyt_kafka_close(kafka, 0, false);
	return false;
}

/* Empties the wake-up pipe (it only says "look at the queues"). */
void
flyt_kafka_drain_wake_fd(FlytKafka *kafka)
{
	char		buf[256];

	if (kafka->wake_read_fd < 0)
		return;
	while (read(kafka->wake_read_fd, buf, sizeof(buf)) > 0)
		;
}

/*
 * Consumers whose close did not finish in time.  Destroying a consumer in
 * the middle of its close can wait forever, so such a one is kept here and
 * served on every pass (its close queue, and its own queue so that its
 * statistics and logs do not pile up) until the close completes; then it
 * is destroyed.  Its queues no longer wake the worker: their pipe is gone.
 */
#define MAX_ABANDONED 8

typedef struct Abandoned
{
	rd_kafka_t *consumer;
	rd_kafka_queue_t *close_queue;
} Abandoned;

static Abandoned abandoned[MAX_ABANDONED];
static int	nabandoned = 0;

/* Serves the abandoned consumers; destroys those whose close completed. */
void
flyt_kafka_reap_abandoned(void)
{
	for (int i = 0; i < nabandoned;)
	{
		Abandoned  *a = &abandoned[i];
		rd_kafka_message_t *msg;

		(void) rd_kafka_queue_poll_callback(a->close_queue, 0);
		while ((msg = rd_kafka_consumer_poll(a->consumer, 0)) != NULL)
			rd_kafka_message_destroy(msg);
		if (!rd_kafka_consumer_closed(a->consumer))
		{
			i++;
			continue;
		}
		rd_kafka_queue_destroy(a->close_queue);
		rd_kafka_destroy_flags(a->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
		ereport(LOG,
				(errmsg("flyt_instance: an earlier Kafka consumer finished closing and was freed")));
		abandoned[i] = abandoned[--nabandoned];
	}
	flyt_kafka_serve_logs();
}

int
flyt_kafka_abandoned_count(void)
{
	return nabandoned;
}

/*
 * Closes the handles within budget_ms in all.  The consumer closes first:
 * it commits nothing (the database holds the offsets) and serves the final
 * revocation through the rebalance callback; a dynamic member leaves its
 * group, a static one (group.instance.id) keeps its place for the restart.
 * Then, with flush, the producer gets what is left of the budget to deliver
 * what it holds (delivery reports are served meanwhile); whatever is left
 * stays in flyt.outbox and is sent again later.
 */
void
flyt_kafka_close(FlytKafka *kafka, int budget_ms, bool flush)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), budget_ms);

	if (kafka->consumer != NULL)
	{
		rd_kafka_error_t *error;
		rd_kafka_queue_t *close_queue = rd_kafka_queue_new(kafka->consumer);

		error = rd_kafka_consumer_close_queue(kafka->consumer, close_queue);
		if (error != NULL)
		{
			rd_kafka_error_destroy(error);
			rd_kafka_queue_destroy(close_queue);
			close_queue = NULL;
		}
		else
		{
			bool		revoked_here = false;

			while (!rd_kafka_consumer_closed(kafka->consumer))
			{
				(void) rd_kafka_queue_poll_callback(close_queue, 50);
				if (GetCurrentTimestamp() < deadline)
					continue;
				if (revoked_here)
					break;
				/* the brokers do not answer: acknowledge the revocation here */
				(void) rd_kafka_assign(kafka->consumer, NULL);
				revoked_here = true;
				deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 200);
			}
		}
		if (close_queue != NULL && !rd_kafka_consumer_closed(kafka->consumer))
		{
			if (nabandoned < MAX_ABANDONED)
			{
				ereport(LOG,
						(errmsg("flyt_instance: the Kafka consumer did not close in time; finishing its close in the background")));
				/* its queues must not write to a pipe that is about to close */
				rd_kafka_queue_io_event_enable(kafka->consumer_queue, -1, NULL, 0);
				abandoned[nabandoned].consumer = kafka->consumer;
				abandoned[nabandoned].close_queue = close_queue;
				nabandoned++;
			}
			else
			{
				/* cannot happen in practice; never wait forever */
				ereport(LOG,
						(errmsg("flyt_instance: too many Kafka consumers are still closing; leaving this one to its threads")));
				rd_kafka_queue_io_event_enable(kafka->consumer_queue, -1, NULL, 0);
			}
			kafka->consumer = NULL;
		}
		else if (close_queue != NULL)
			rd_kafka_queue_destroy(close_queue);
	}
	if (kafka->consumer_queue != NULL)
		rd_kafka_queue_destroy(kafka->consumer_queue);
	if (kafka->consumer != NULL)
		rd_kafka_destroy_flags(kafka->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);

	if (kafka->producer != NULL)
	{
		if (flush)
		{
			long		left_ms = (long) ((deadline - GetCurrentTimestamp()) / 1000);

			if (left_ms > 0)
				(void) rd_kafka_flush(kafka->producer, (int) left_ms);
		}
		(void) rd_kafka_purge(kafka->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		/* the purged messages' delivery reports: they stay in the outbox */
		(void) rd_kafka_poll(kafka->producer, 0);
	}
	if (kafka->admin_queue != NULL)
		rd_kafka_queue_destroy(kafka->admin_queue);
	if (kafka->producer_queue != NULL)
		rd_kafka_queue_destroy(kafka->producer_queue);
	forget_topics(kafka);
	if (kafka->producer != NULL)
		rd_kafka_destroy(kafka->producer);

	if (kafka->wake_read_fd >= 0)
		close(kafka->wake_read_fd);
	if (kafka->wake_write_fd >= 0)
		close(kafka->wake_write_fd);
	if (kafka->settings != NULL)
		pfree(kafka->settings);
	memset(kafka, 0, sizeof(*kafka));
	kafka->wake_read_fd = kafka->wake_write_fd = -1;
	flyt_kafka_serve_logs();
}
