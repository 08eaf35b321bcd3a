/*-------------------------------------------------------------------------
 *
 * status.c
 *	  flyt_status() and flyt_metrics(): health and figures for operators.
 *
 * Both combine what the worker publishes in shared memory with a few cheap
 * queries (outbox backlog, dead letters, the last cleanup run).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "deadletter.h"
#include "guc.h"
#include "plans.h"
#include "shared.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_status);
PG_FUNCTION_INFO_V1(flyt_metrics);

static SPIPlanPtr outbox_plan = NULL;
static SPIPlanPtr dead_letter_plan = NULL;
static SPIPlanPtr cleanup_plan = NULL;
static SPIPlanPtr cleanup_success_plan = NULL;

/* What the tables say. */
typedef struct TableFigures
{
	int64		backlog;
	double		oldest_age;		/* seconds; < 0 when the outbox is empty */
	int64		dead_letters;
	json_t	   *last_cleanup;	/* null when there was none */
	/* the same run for flyt_metrics(), as Unix time; < 0 when none */
	double		last_cleanup_started;
	bool		last_cleanup_failed;
	double		last_cleanup_success;	/* finish of the last succeeded run */
} TableFigures;

static json_t *
json_timestamp(TimestampTz ts)
{
	char		buf[40];

	if (ts == 0)
		return json_null();
	flyt_format_timestamp(ts, buf, sizeof(buf));
	return json_string(buf);
}

/* A timestamp as Unix time in seconds, as Prometheus wants it. */
static double
unix_seconds(TimestampTz ts)
{
	return (double) (ts - SetEpochTimestamp()) / USECS_PER_SEC;
}

static void
read_tables(TableFigures *t)
{
	bool		isnull;
	Datum		d;
	HeapTuple	tuple;
	TupleDesc	desc;
	MemoryContext caller_context = CurrentMemoryContext;

	flyt_spi_connect();
	flyt_plan(&outbox_plan,
			  "SELECT pg_catalog.count(*), "
			  "  EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(created_at))::pg_catalog.float8 "
			  "FROM flyt.outbox",
			  0, NULL);
	flyt_execute(outbox_plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	t->backlog = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	t->oldest_age = isnull ? -1 : Max(DatumGetFloat8(d), 0);

	/* dead until redriven or discarded (deadletter.c) */
	flyt_plan(&dead_letter_plan, "SELECT pg_catalog.count(*) FROM flyt.dead_letter "
			  "WHERE status OPERATOR(pg_catalog.=) 'dead'", 0, NULL);
	flyt_execute(dead_letter_plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	t->dead_letters = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	flyt_plan(&cleanup_plan,
			  "SELECT id, started_at, finished_at, status, deleted, deleted_without_event, error "
			  "FROM flyt.cleanup_run ORDER BY id DESC LIMIT 1",
			  0, NULL);
	t->last_cleanup = json_null();
	t->last_cleanup_started = -1;
	t->last_cleanup_failed = false;
	t->last_cleanup_success = -1;
	if (flyt_execute(cleanup_plan, NULL, NULL, true, 0, SPI_OK_SELECT) == 1)
	{
		char	   *error;
		MemoryContext spi_context;

		tuple = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		/* the JSON outlives SPI_finish: build it in the caller's memory */
		spi_context = MemoryContextSwitchTo(caller_context);
		t->last_cleanup = json_object();
		json_object_set_new(t->last_cleanup, "id",
							json_integer(DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull))));
		json_object_set_new(t->last_cleanup, "started_at",
							json_timestamp(DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &isnull))));
		d = SPI_getbinval(tuple, desc, 3, &isnull);
		json_object_set_new(t->last_cleanup, "finished_at",
							isnull ? json_null() : json_timestamp(DatumGetTimestampTz(d)));
		json_object_set_new(t->last_cleanup, "status", json_string(SPI_getvalue(tuple, desc, 4)));
		json_object_set_new(t->last_cleanup, "deleted",
							json_integer(DatumGetInt64(SPI_getbinval(tuple, desc, 5, &isnull))));
		json_object_set_new(t->last_cleanup, "deleted_without_event",
							json_integer(DatumGetInt64(SPI_getbinval(tuple, desc, 6, &isnull))));
		error = SPI_getvalue(tuple, desc, 7);
		json_object_set_new(t->last_cleanup, "error", error ? json_string(error) : json_null());
		MemoryContextSwitchTo(spi_context);
		t->last_cleanup_started = unix_seconds(DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &isnull)));
		t->last_cleanup_failed = strcmp(SPI_getvalue(tuple, desc, 4), "failed") == 0;
	}

	flyt_plan(&cleanup_success_plan,
			  "SELECT pg_catalog.max(finished_at) FROM flyt.cleanup_run "
			  "WHERE status OPERATOR(pg_catalog.=) 'succeeded'",
			  0, NULL);
	flyt_execute(cleanup_success_plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		t->last_cleanup_success = unix_seconds(DatumGetTimestampTz(d));
	flyt_spi_finish();
}

/* A consistent copy of what the worker published; NULL without preload. */
static FlytShared *
copy_shared(void)
{
	FlytShared *s;

	if (flyt_shared == NULL)
		return NULL;
	s = palloc(sizeof(FlytShared));
	LWLockAcquire(flyt_shared->lock, LW_SHARED);
	memcpy(s, flyt_shared, sizeof(FlytShared));
	LWLockRelease(flyt_shared->lock);
	return s;
}

/*
 * Has the subscribed consumer been without partitions for longer than the
 * grace period?  Then nothing is consumed, whatever else is well.
 */
static bool
assignment_overdue(const FlytShared *s)
{
	return s->subscribed && s->assignment_waiting_since != 0 &&
		TimestampDifferenceExceeds(s->assignment_waiting_since, GetCurrentTimestamp(),
								   flyt_consumer_assignment_grace_s * 1000);
}

/* Decides UP or DOWN, and why. */
static const char *
down_reason(const FlytShared *s)
{
	if (s == NULL)
		return "worker is not running (flyt_instance is not in shared_preload_libraries)";
	if (s->worker_pid == 0)
		return "worker is not running";
	switch (s->state)
	{
		case FLYT_WORKER_RUNNING:
			break;
		case FLYT_WORKER_KAFKA_OFF:
			return s->reason[0] ? s->reason
				: "kafka is not configured (flyt_instance.kafka_bootstrap_servers is empty)";
		default:
			return s->reason[0] ? s->reason : flyt_worker_state_name(s->state);
	}
	if (s->reason[0])
		return s->reason;
	if (!s->connected)
		return "kafka is unreachable";
	if (s->circuit == FLYT_CIRCUIT_OPEN)
		return "circuit is OPEN";
	/* half open with no message to try: up once a broker answered a probe */
	if (s->circuit == FLYT_CIRCUIT_HALF_OPEN && !s->circuit_reachable)
		return "circuit is HALF_OPEN and no broker has answered yet";
	if (assignment_overdue(s))
	{
		char		since[40];

		flyt_format_timestamp(s->assignment_waiting_since, since, sizeof(since));
		return psprintf("the consumer has had no partitions assigned since %s "
						"(longer than flyt_instance.consumer_assignment_grace)", since);
	}
	return NULL;
}

/* flyt_status() → jsonb: health of the worker, Kafka, outbox, consumer, cleanup. */
Datum
flyt_status(PG_FUNCTION_ARGS)
{
	FlytShared *s;
	TableFigures t;
	json_t	   *root = json_object();
	json_t	   *w = json_object();
	json_t	   *k = json_object();
	json_t	   *circuit = json_object();
	json_t	   *events = json_array();
	json_t	   *outbox = json_object();
	json_t	   *consumer = json_object();
	json_t	   *partitions = json_array();
	json_t	   *cleanup = json_object();
	const char *reason;
	int64		total_lag = 0;
	bool		lag_known = false;

	s = copy_shared();
	read_tables(&t);

	reason = down_reason(s);
	json_object_set_new(root, "status", json_string(reason ? "DOWN" : "UP"));
	json_object_set_new(root, "reason", reason ? json_string(reason) : json_null());

	json_object_set_new(w, "running", json_boolean(s != NULL && s->worker_pid != 0));
	json_object_set_new(w, "pid", s && s->worker_pid ? json_integer(s->worker_pid) : json_null());
	json_object_set_new(w, "state", json_string(flyt_worker_state_name(s ? s->state : FLYT_WORKER_NOT_RUNNING)));
	json_object_set_new(w, "database", json_string(flyt_database));
	json_object_set_new(w, "started_at", json_timestamp(s && s->worker_pid ? s->started_at : 0));
	json_object_set_new(root, "worker", w);

	json_object_set_new(k, "bootstrap_servers", json_string(flyt_kafka_bootstrap_servers));
	json_object_set_new(k, "connected", json_boolean(s != NULL && s->worker_pid != 0 && s->connected));
	json_object_set_new(circuit, "state", json_string(flyt_circuit_state_name(s ? s->circuit : FLYT_CIRCUIT_CLOSED)));
	if (s != NULL)
	{
		int			n = Min(s->circuit_event_count, FLYT_CIRCUIT_EVENTS);

		/* oldest first */
		for (int i = s->circuit_event_count - n; i < s->circuit_event_count; i++)
		{
			const FlytCircuitEvent *ev = &s->circuit_events[i % FLYT_CIRCUIT_EVENTS];

			json_array_append_new(events,
								  json_pack("{s:o, s:s, s:s}",
											"at", json_timestamp(ev->at),
											"state", flyt_circuit_state_name(ev->state),
											"reason", ev->reason));
		}
	}
	json_object_set_new(circuit, "reachable",
						json_boolean(s != NULL && s->circuit != FLYT_CIRCUIT_OPEN &&
									 (s->circuit == FLYT_CIRCUIT_CLOSED || s->circuit_reachable)));
	json_object_set_new(circuit, "events", events);
	json_object_set_new(k, "circuit", circuit);
	json_object_set_new(root, "kafka", k);

	json_object_set_new(outbox, "backlog", json_integer(t.backlog));
	json_object_set_new(outbox, "oldest_age_seconds", t.oldest_age < 0 ? json_null() : json_real(t.oldest_age));
	json_object_set_new(outbox, "in_flight", json_integer(s ? s->in_flight : 0));
	json_object_set_new(outbox, "in_flight_bytes", json_integer(s ? (json_int_t) s->in_flight_bytes : 0));
	json_object_set_new(root, "outbox", outbox);

	for (int i = 0; s != NULL && s->worker_pid != 0 && i < s->npartitions; i++)
	{
		const FlytPartitionState *p = &s->partitions[i];
		json_t	   *lag = json_null();

		if (p->next_offset >= 0 && p->high_watermark >= 0)
		{
			int64		l = Max(p->high_watermark - p->next_offset, 0);

			lag = json_integer(l);
			total_lag += l;
			lag_known = true;
		}
		json_array_append_new(partitions,
							  json_pack("{s:s, s:i, s:o, s:o, s:o}",
										"topic", p->topic,
										"partition", p->partition,
										"next_offset", p->next_offset >= 0 ? json_integer(p->next_offset) : json_null(),
										"high_watermark", p->high_watermark >= 0 ? json_integer(p->high_watermark) : json_null(),
										"lag", lag));
	}
	{
		const char *state = "not_subscribed";
		bool		waiting = false;

		if (s != NULL && s->worker_pid != 0 && s->subscribed)
		{
			waiting = s->assignment_waiting_since != 0;
			state = waiting ? "waiting" : "assigned";
		}
		json_object_set_new(consumer, "assignment",
							json_pack("{s:s, s:o}",
									  "state", state,
									  "waiting_since", json_timestamp(waiting ? s->assignment_waiting_since : 0)));
	}
	json_object_set_new(consumer, "lag", lag_known ? json_integer(total_lag) : json_null());
	json_object_set_new(consumer, "partitions", partitions);
	json_object_set_new(root, "consumer", consumer);

	json_object_set_new(root, "dead_letters", json_integer(t.dead_letters));

	/* flow headers asked of fint-flyt-history-service (flowreq.c) */
	{
		int			waiting = 0;

		for (int i = 0; s != NULL && i < FLYT_FLOW_REQUEST_SLOTS; i++)
			if (s->flow_requests[i].state != FLYT_FLOW_FREE)
				waiting++;
		json_object_set_new(root, "flow_headers",
							json_pack("{s:I, s:I, s:i}",
									  "requests_sent", (json_int_t) (s ? pg_atomic_read_u64(&flyt_shared->flow_requests_sent) : 0),
									  "replies", (json_int_t) (s ? pg_atomic_read_u64(&flyt_shared->flow_replies) : 0),
									  "waiting", waiting));
	}

	json_object_set_new(cleanup, "last_run", t.last_cleanup);
	json_object_set_new(cleanup, "next_run_at", json_timestamp(s && s->worker_pid ? s->next_cleanup_at : 0));
	json_object_set_new(root, "cleanup", cleanup);

	/* dead letters by topic and reason, redrives and discards (deadletter.c) */
	json_object_set_new(root, "dead_letter_actions", flyt_dead_letter_status());

	PG_RETURN_JSONB_P(flyt_json_to_jsonb(root));
}

static int
compare_float(const void *a, const void *b)
{
	float		x = *(const float *) a;
	float		y = *(const float *) b;

	return (x > y) - (x < y);
}

static void
metric(StringInfo buf, const char *name, const char *type, const char *help)
{
	appendStringInfo(buf, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* flyt_metrics() → text: the same figures in Prometheus text format. */
Datum
flyt_metrics(PG_FUNCTION_ARGS)
{
	FlytShared *s;
	TableFigures t;
	StringInfoData buf;
	bool		up;

	s = copy_shared();
	read_tables(&t);
	up = down_reason(s) == NULL;
	initStringInfo(&buf);

	metric(&buf, "flyt_instance_up", "gauge", "1 when the worker runs, Kafka is reachable and the circuit is closed.");
	appendStringInfo(&buf, "flyt_instance_up %d\n", up ? 1 : 0);

#define COUNTER(name, field, help) \
	do { \
		metric(&buf, name, "counter", help); \
		appendStringInfo(&buf, "%s " UINT64_FORMAT "\n", name, \
						 s ? pg_atomic_read_u64(&flyt_shared->field) : 0); \
	} while (0)

	COUNTER("flyt_instance_registered_total", registered, "Instances registered.");
	COUNTER("flyt_instance_retried_total", retried, "Retries queued.");
	COUNTER("flyt_instance_deleted_total", deleted, "Instances deleted (dispatched or cleaned up).");
	COUNTER("flyt_instance_produced_total", produced, "Messages acknowledged by Kafka.");
	COUNTER("flyt_instance_consumed_total", consumed, "Messages consumed and applied.");
	COUNTER("flyt_instance_dead_lettered_total", dead_lettered, "Messages moved to flyt.dead_letter.");
	COUNTER("flyt_instance_pump_wal_flushes_total", pump_wal_flushes,
			"Times the worker found the WAL not flushed far enough before sending rows and flushed it.");
	COUNTER("flyt_instance_flow_headers_requests_total", flow_requests_sent,
			"Requests for flow headers sent to fint-flyt-history-service.");
	COUNTER("flyt_instance_flow_headers_replies_total", flow_replies,
			"Replies of fint-flyt-history-service applied to requests still waiting.");

	metric(&buf, "flyt_instance_produce_latency_seconds", "summary",
		   "Time from the change that queued a message to Kafka's acknowledgement.");
	if (s != NULL && s->latency_count > 0)
	{
		int			n = (int) Min(s->latency_count, (uint64) FLYT_LATENCY_SAMPLES);

		qsort(s->latency_samples, n, sizeof(float), compare_float);
		appendStringInfo(&buf, "flyt_instance_produce_latency_seconds{quantile=\"0.5\"} %g\n",
						 s->latency_samples[(n - 1) / 2]);
		appendStringInfo(&buf, "flyt_instance_produce_latency_seconds{quantile=\"0.99\"} %g\n",
						 s->latency_samples[(int) ((n - 1) * 0.99)]);
	}
	appendStringInfo(&buf, "flyt_instance_produce_latency_seconds_sum %g\n",
					 s ? s->latency_sum_seconds : 0.0);
	appendStringInfo(&buf, "flyt_instance_produce_latency_seconds_count " UINT64_FORMAT "\n",
					 s ? s->latency_count : (uint64) 0);

	metric(&buf, "flyt_instance_outbox_backlog", "gauge", "Messages waiting in flyt.outbox.");
	appendStringInfo(&buf, "flyt_instance_outbox_backlog " INT64_FORMAT "\n", t.backlog);
	metric(&buf, "flyt_instance_outbox_oldest_age_seconds", "gauge", "Age of the oldest message in flyt.outbox.");
	appendStringInfo(&buf, "flyt_instance_outbox_oldest_age_seconds %g\n", Max(t.oldest_age, 0));
	metric(&buf, "flyt_instance_dead_letters", "gauge", "Dead letters not yet redriven or discarded.");
	appendStringInfo(&buf, "flyt_instance_dead_letters " INT64_FORMAT "\n", t.dead_letters);

	metric(&buf, "flyt_instance_consumer_lag", "gauge", "Messages not yet consumed, per partition.");
	for (int i = 0; s != NULL && s->worker_pid != 0 && i < s->npartitions; i++)
	{
		const FlytPartitionState *p = &s->partitions[i];

		if (p->next_offset >= 0 && p->high_watermark >= 0)
			appendStringInfo(&buf, "flyt_instance_consumer_lag{topic=\"%s\",partition=\"%d\"} " INT64_FORMAT "\n",
							 p->topic, p->partition, Max(p->high_watermark - p->next_offset, 0));
	}

	metric(&buf, "flyt_instance_circuit_state", "gauge", "Kafka circuit breaker: 0 closed, 1 half open, 2 open.");
	appendStringInfo(&buf, "flyt_instance_circuit_state %d\n", s ? (int) s->circuit : 0);

	/*
	 * What the alerts of monitoring/flyt-instance-rules.yaml need beyond the
	 * above (issue 14).  Timestamps are Unix seconds; a timestamp that does
	 * not exist (no cleanup run yet, none scheduled) is left out rather than
	 * given as 0, so that time() - x never looks like 56 years.
	 */
	metric(&buf, "flyt_instance_worker_running", "gauge",
		   "1 when the background worker process runs (it is restarted 5 s after it exits).");
	appendStringInfo(&buf, "flyt_instance_worker_running %d\n", s != NULL && s->worker_pid != 0 ? 1 : 0);
	metric(&buf, "flyt_instance_kafka_connected", "gauge", "1 when the worker is connected to a Kafka broker.");
	appendStringInfo(&buf, "flyt_instance_kafka_connected %d\n",
					 s != NULL && s->worker_pid != 0 && s->connected ? 1 : 0);
	metric(&buf, "flyt_instance_outbox_in_flight", "gauge", "Messages sent to Kafka and not yet acknowledged.");
	appendStringInfo(&buf, "flyt_instance_outbox_in_flight %d\n", s ? (int) s->in_flight : 0);
	metric(&buf, "flyt_instance_outbox_in_flight_bytes", "gauge", "Size of the messages in flight (key, value and headers), as flyt_instance.max_in_flight_memory counts it.");
	appendStringInfo(&buf, "flyt_instance_outbox_in_flight_bytes " INT64_FORMAT "\n", s ? s->in_flight_bytes : 0);
	{
		int			waiting = 0;

		for (int i = 0; s != NULL && i < FLYT_FLOW_REQUEST_SLOTS; i++)
			if (s->flow_requests[i].state != FLYT_FLOW_FREE)
				waiting++;
		metric(&buf, "flyt_instance_flow_headers_waiting", "gauge",
			   "Requests for flow headers waiting to be sent or answered.");
		appendStringInfo(&buf, "flyt_instance_flow_headers_waiting %d\n", waiting);
	}
	metric(&buf, "flyt_instance_cleanup_interval_seconds", "gauge",
		   "flyt_instance.cleanup_interval: time between scheduled cleanup runs.");
	appendStringInfo(&buf, "flyt_instance_cleanup_interval_seconds %g\n", flyt_cleanup_interval_ms / 1000.0);
	metric(&buf, "flyt_instance_cleanup_last_run_timestamp_seconds", "gauge",
		   "Start of the last cleanup run (absent before the first).");
	if (t.last_cleanup_started >= 0)
		appendStringInfo(&buf, "flyt_instance_cleanup_last_run_timestamp_seconds %.3f\n", t.last_cleanup_started);
	metric(&buf, "flyt_instance_cleanup_last_run_failed", "gauge",
		   "1 when the last cleanup run failed (flyt.cleanup_run.error says why).");
	appendStringInfo(&buf, "flyt_instance_cleanup_last_run_failed %d\n", t.last_cleanup_failed ? 1 : 0);
	metric(&buf, "flyt_instance_cleanup_last_success_timestamp_seconds", "gauge",
		   "End of the last cleanup run that succeeded (absent before the first).");
	if (t.last_cleanup_success >= 0)
		appendStringInfo(&buf, "flyt_instance_cleanup_last_success_timestamp_seconds %.3f\n", t.last_cleanup_success);
	metric(&buf, "flyt_instance_cleanup_next_run_timestamp_seconds", "gauge",
		   "When the worker runs the next cleanup (absent when the worker does not run).");
	if (s != NULL && s->worker_pid != 0 && s->next_cleanup_at != 0)
		appendStringInfo(&buf, "flyt_instance_cleanup_next_run_timestamp_seconds %.3f\n",
						 unix_seconds(s->next_cleanup_at));

	/* dead letters by topic and reason, redrives and discards (deadletter.c) */
	flyt_dead_letter_metrics(&buf);

	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
