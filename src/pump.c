/*-------------------------------------------------------------------------
 *
 * pump.c
 *	  The outbox pump: flyt.outbox to Kafka, in order, at least once.
 *
 * A scan reads the outbox in id order and hands rows to the idempotent
 * producer until flyt_instance.max_in_flight are outstanding or their size
 * (row_size) reaches flyt_instance.max_in_flight_memory; it runs only while
 * at most half of each is (flyt_pump_window_open).  Rows are deleted
 * once acknowledged, so the head holds only what is in flight, what waits
 * for redelivery and what is new.  A scan starts after the ids it knows
 * were all handed over (scan_from, see flyt_pump_send), not at the head:
 * the deleted rows there cost a visit each until vacuum removes them.  A
 * scan reads the primary key forward from there (outbox_scan.c), and rows
 * in flight are passed over by the id in their index entries.  A row in
 * flight or waiting for redelivery blocks the later rows of its key, so
 * events of one instance never overtake each other.
 *
 * Delivery reports are collected while librdkafka's queue is served and
 * applied afterwards in one transaction: delivered rows are deleted, at the
 * tid the scan found them while they are still that version
 * (flyt_outbox_delete_found), else by id.  A row
 * the brokers refused for what it is (too large, invalid, not authorised)
 * waits flyt_instance.redelivery_millis (doubling per attempt, capped) and
 * after flyt_instance.redelivery_max_no redeliveries moves to
 * flyt.dead_letter.  A row that failed on the way (brokers down, timed out)
 * waits redelivery_millis and goes again for as long as that lasts; the
 * circuit breaker keeps such retries to one probe at a time.  "Message
 * timed out" is a local verdict (the message may have been written), so it
 * is sent again: consumers drop duplicates by the flyt.event-id header.
 *
 * Nothing is sent before the transaction that queued it is durable (flushed,
 * and on synchronous standbys where the server waits for them), even when it
 * committed without waiting: see row_durable.
 *
 * The caller runs each function that touches the database inside a
 * transaction, connected to SPI.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "access/clog.h"
#include "access/transam.h"
#include "access/xlog.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "access/xlog_internal.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "idhash.h"
#include "history.h"
#include "outbox.h"
#include "outbox_scan.h"
#include "plans.h"
#include "pump.h"
#include "shared.h"
#include "wire.h"

/* Wait before scanning again while synchronous standbys lag behind. */
#define STANDBY_WAIT_MS 20
/*
 * A row whose transaction's backend has yet to say how its commit ended is
 * looked at again this soon (a wake-up normally comes first); once scans
 * have found such rows for COMMIT_ENDING_PATIENCE_MS, they are flushed for.
 */
#define COMMIT_ENDING_WAIT_MS 1
#define COMMIT_ENDING_PATIENCE_MS 50

static SPIPlanPtr delete_plan = NULL;
static SPIPlanPtr fail_plan = NULL;
static SPIPlanPtr wait_plan = NULL;

static void key_in_flight(FlytPump *pump, uint32 tag, int delta);
static SPIPlanPtr dead_letter_plan = NULL;

void
flyt_pump_init(FlytPump *pump)
{
	memset(pump, 0, sizeof(*pump));
	pump->context = AllocSetContextCreate(TopMemoryContext, "flyt_instance pump",
										  ALLOCSET_DEFAULT_SIZES);
	pump->inflight = idhash_create(pump->context, 1024, NULL);
	pump->inflight_keys = idhash_create(pump->context, 1024, NULL);
	pump->blocked = idhash_create(pump->context, 256, NULL);
	pump->delayed = idhash_create(pump->context, 256, NULL);
	pump->reports_size = 1024;
	pump->reports = MemoryContextAlloc(pump->context, sizeof(FlytDelivery) * pump->reports_size);
	pump->more = true;
}

/*
 * The producer's delivery report callback, called on the worker's thread
 * while the producer's queue is served.  It only records: the database work
 * happens in flyt_pump_apply_reports.  There is room for every message in
 * flight (flyt_pump_send makes sure), so this never allocates.
 */
void
flyt_pump_delivery_report(FlytPump *pump, const rd_kafka_message_t *msg)
{
	if (pump->nreports >= pump->reports_size)
		return;					/* cannot happen; the row is sent again later */
	pump->reports[pump->nreports].id = (int64) (intptr_t) msg->_private;
	pump->reports[pump->nreports].err = msg->err;
	pump->nreports++;
}

/*
 * Scans start at the head again: a row that was handed over is queued
 * again (its delivery failed, or the producer was lost with it).
 */
static void
rescan_from_head(FlytPump *pump)
{
	pump->scan_from = 0;
	pump->next_from = 0;
	idhash_reset(pump->delayed);
}

/* flyt_instance.max_in_flight_memory in bytes. */
static int64
max_in_flight_bytes(void)
{
	return (int64) flyt_max_in_flight_memory_kb * 1024;
}

/*
 * What the producer holds of a row while it is in flight: copies of its key,
 * value and headers (their jsonb size stands in for the header bytes).
 */
static uint32
row_size(const FlytOutboxRow *row)
{
	return (uint32) row->key_len + (uint32) row->value_len +
		(row->headers != NULL ? VARSIZE(row->headers) : 0);
}

/* Every message in flight is lost with the producer: the rows stay queued. */
void
flyt_pump_forget_in_flight(FlytPump *pump)
{
	rescan_from_head(pump);
	idhash_reset(pump->inflight);
	idhash_reset(pump->inflight_keys);
	pump->in_flight = 0;
	pump->bytes_in_flight = 0;
	pump->nreports = 0;
	pump->more = true;
	pump->queue_full = false;
}

/*
 * May a scan send now, as far as the window goes?  A scan walks every row in
 * flight at the outbox's head to reach the rows after them, so while more
 * than half of flyt_instance.max_in_flight (or of max_in_flight_memory) is
 * in flight it waits for the reports that free the rest (one round trip to
 * the brokers): each scan then sends at least as many rows as it walks over.
 * With few in flight, as while retries trickle in, a row goes at once.
 */
bool
flyt_pump_window_open(FlytPump *pump)
{
	return pump->in_flight <= flyt_max_in_flight / 2 &&
		pump->bytes_in_flight <= max_in_flight_bytes() / 2;
}

/* Should the worker scan the outbox now? */
bool
flyt_pump_wants_scan(FlytPump *pump, TimestampTz now)
{
	if (!flyt_pump_window_open(pump))
		return false;
	return pump->more || (pump->next_retry_at != 0 && now >= pump->next_retry_at) ||
		TimestampDifferenceExceeds(pump->last_scan_at, now, FLYT_PUMP_IDLE_SCAN_MS);
}

/* Records a produce latency sample and a delivered message. */
static void
record_delivered(TimestampTz created_at, TimestampTz now)
{
	double		seconds;

	if (flyt_shared == NULL)
		return;
	seconds = (double) (now - created_at) / USECS_PER_SEC;
	if (seconds < 0)
		seconds = 0;
	pg_atomic_add_fetch_u64(&flyt_shared->produced, 1);
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	flyt_shared->latency_count++;
	flyt_shared->latency_sum_seconds += seconds;
	flyt_shared->latency_samples[flyt_shared->latency_next] = (float) seconds;
	flyt_shared->latency_next = (flyt_shared->latency_next + 1) % FLYT_LATENCY_SAMPLES;
	LWLockRelease(flyt_shared->lock);
}

/*
 * A row that exhausted its redeliveries goes to flyt.dead_letter; a retry
 * event that dies this way also queues instance-retry-request-error and
 * records RETRY_FAILED.
 */
static void
dead_letter(int64 id, const char *event_name, const char *key,
			const char *flow_headers, const char *error)
{
	static const Oid argtypes[] = {INT8OID, TEXTOID};
	Datum		values[2];

	flyt_plan(&dead_letter_plan,
			  "WITH d AS (DELETE FROM flyt.outbox WHERE id OPERATOR(pg_catalog.=) $1 RETURNING *) "
			  "INSERT INTO flyt.dead_letter (topic, outbox_id, original_message_id, message_key, headers, "
			  "  original_message_payload, failure_transience, message_delivery_attempts, failure_details) "
			  "SELECT topic, id, 'outbox/' OPERATOR(pg_catalog.||) id, pg_catalog.convert_to(key, 'UTF8'), headers, "
			  "  pg_catalog.convert_to(value, 'UTF8'), 'TRANSIENT', attempts, "
			  "  pg_catalog.jsonb_build_object('errorMessage', $2, 'event', event_name) "
			  "FROM d",
			  2, argtypes);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(error);
	flyt_execute_by_id(dead_letter_plan, values, NULL, false, 0, SPI_OK_INSERT);
	if (flyt_shared != NULL)
		pg_atomic_add_fetch_u64(&flyt_shared->dead_lettered, 1);
	ereport(LOG,
			(errmsg("flyt_instance: outbox message %lld (%s) moved to flyt.dead_letter after its last redelivery",
					(long long) id, event_name),
			 errdetail_internal("%s", error)));

	if (strcmp(event_name, FLYT_EVENT_RETRY) == 0 && key != NULL)
	{
		char	   *end;
		long long	instance_id = strtoll(key, &end, 10);

		flyt_outbox_enqueue_error(FLYT_ERROR_RETRY_REQUEST, key, flow_headers);
		if (*end == '\0')
		{
			json_t	   *detail = json_pack("{s:s}", "error", error);

			flyt_append_event((int64) instance_id, "RETRY_FAILED", "flyt_instance worker",
							  NULL, flyt_json_dump(detail));
			json_decref(detail);
		}
	}
}

/*
 * Was a delivery refused for what the message is, so that sending it again
 * as it is cannot succeed (too large, an invalid record, not authorised)?
 * Everything else (brokers unreachable, timeouts, leadership moving, a
 * topic not there yet) is the path's fault: it drives the circuit breaker
 * and is retried for as long as it lasts, without counting toward
 * flyt_instance.redelivery_max_no, so a long Kafka outage dead-letters
 * nothing.
 */
static bool
message_refused(rd_kafka_resp_err_t err)
{
	switch (err)
	{
		case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
		case RD_KAFKA_RESP_ERR_INVALID_MSG:
		case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
		case RD_KAFKA_RESP_ERR_INVALID_RECORD:
		case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
		case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
		case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
		case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
		case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
		case RD_KAFKA_RESP_ERR__INVALID_ARG:
			return true;
		default:
			return false;
	}
}

/*
 * A row whose delivery failed on the way (see message_refused): it waits
 * redelivery_millis and goes again, its attempts untouched.
 */
static void
delivery_delayed(int64 id, const char *error)
{
	static const Oid argtypes[] = {INT8OID, FLOAT8OID, TEXTOID};
	Datum		values[3];

	flyt_plan(&wait_plan,
			  "UPDATE flyt.outbox SET "
			  "  next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $2), "
			  "  last_error = $3 "
			  "WHERE id OPERATOR(pg_catalog.=) $1",
			  3, argtypes);
	values[0] = Int64GetDatum(id);
	values[1] = Float8GetDatum(flyt_redelivery_millis / 1000.0);
	values[2] = CStringGetTextDatum(error);
	flyt_execute_by_id(wait_plan, values, NULL, false, 0, SPI_OK_UPDATE);
}

/* Schedules the redelivery of a refused row, or dead-letters it. */
static void
delivery_failed(int64 id, const char *error)
{
	static const Oid argtypes[] = {INT8OID, FLOAT8OID, FLOAT8OID, TEXTOID};
	Datum		values[4];
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	int			attempts;
	char	   *event_name;
	char	   *key;
	char	   *flow_headers;

	flyt_plan(&fail_plan,
			  "UPDATE flyt.outbox SET attempts = attempts OPERATOR(pg_catalog.+) 1, "
			  "  next_attempt_at = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => "
			  "    LEAST($2 OPERATOR(pg_catalog.*) pg_catalog.power(2::pg_catalog.float8, attempts), $3) "
			  "    OPERATOR(pg_catalog./) 1000.0), "
			  "  last_error = $4 "
			  "WHERE id OPERATOR(pg_catalog.=) $1 "
			  "RETURNING attempts, event_name, key, headers OPERATOR(pg_catalog.->>) '" FLYT_HEADER_FLOW_HEADERS "'",
			  4, argtypes);
	values[0] = Int64GetDatum(id);
	values[1] = Float8GetDatum((double) flyt_redelivery_millis);
	values[2] = Float8GetDatum((double) FLYT_MAX_REDELIVERY_MS);
	values[3] = CStringGetTextDatum(error);
	if (flyt_execute_by_id(fail_plan, values, NULL, false, 0, SPI_OK_UPDATE_RETURNING) == 0)
		return;					/* the row is gone: nothing to redeliver */

	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
	if (attempts <= flyt_redelivery_max_no)
		return;
	event_name = SPI_getvalue(tuple, desc, 2);
	key = SPI_getvalue(tuple, desc, 3);
	flow_headers = SPI_getvalue(tuple, desc, 4);
	dead_letter(id, event_name, key, flow_headers, error);
}

/*
 * Applies the delivery reports collected since the last call: delivered rows
 * are deleted, failed ones scheduled for redelivery.  Tells the breaker.
 */
void
flyt_pump_apply_reports(FlytPump *pump, FlytBreaker *breaker)
{
	static const Oid argtypes[] = {INT8ARRAYOID};
	TimestampTz now = GetCurrentTimestamp();
	int64	   *found_ids;		/* delivered, and where the scan found them */
	ItemPointerData *found_tids;
	int			nfound = 0;
	Datum	   *ok_ids;			/* delivered, to be deleted by id */
	int			nok = 0;
	int			nleft;
	int			nfailed = 0;
	const char *last_error = NULL;

	if (pump->nreports == 0)
		return;
	pump->queue_full = false;

	found_ids = palloc(sizeof(int64) * pump->nreports);
	found_tids = palloc(sizeof(ItemPointerData) * pump->nreports);
	ok_ids = palloc(sizeof(Datum) * pump->nreports);
	for (int i = 0; i < pump->nreports; i++)
	{
		FlytDelivery *report = &pump->reports[i];
		IdEntry *entry = idhash_lookup(pump->inflight, report->id);

		if (report->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			rescan_from_head(pump);	/* the row stays queued, behind scan_from */
		if (report->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
			report->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
		{
			/* not sent because the producer closed: it stays queued as it is */
		}
		else if (report->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			if (entry != NULL)
			{
				found_ids[nfound] = report->id;
				found_tids[nfound++] = entry->tid;
				record_delivered(entry->since, now);
			}
			else
				ok_ids[nok++] = Int64GetDatum(report->id);
		}
		else
		{
			last_error = rd_kafka_err2str(report->err);
			if (message_refused(report->err))
				delivery_failed(report->id, last_error);
			else
				delivery_delayed(report->id, last_error);
			nfailed++;
			pump->more = true;
		}
		if (entry != NULL)
		{
			key_in_flight(pump, entry->tag, -1);
			pump->bytes_in_flight -= entry->size;
			idhash_delete_item(pump->inflight, entry);
			pump->in_flight--;
		}
	}

	/*
	 * Delivered rows are deleted where the scan found them; the few that
	 * changed since (or that no scan of this worker sent) by their ids.
	 */
	nleft = flyt_outbox_delete_found(found_ids, found_tids, nfound);
	for (int i = 0; i < nleft; i++)
		ok_ids[nok++] = Int64GetDatum(found_ids[i]);
	if (nfound > 0 || nok > 0)
		flyt_breaker_success(breaker);
	if (nok > 0)
	{
		Datum		values[1];

		flyt_plan(&delete_plan,
				  "DELETE FROM flyt.outbox WHERE id OPERATOR(pg_catalog.=) ANY ($1)",
				  1, argtypes);
		values[0] = PointerGetDatum(construct_array(ok_ids, nok, INT8OID, sizeof(int64),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		flyt_execute_by_id(delete_plan, values, NULL, false, 0, SPI_OK_DELETE);
	}
	for (int i = 0; i < nfailed; i++)
		flyt_breaker_failure(breaker, psprintf("delivery failed: %s", last_error));
	pump->nreports = 0;
	pump->more = true;
}

/*
 * Makes room for n more delivery reports than are recorded now, so that the
 * delivery report callback never has to allocate.
 */
static void
reserve_reports(FlytPump *pump, int n)
{
	if (pump->reports_size >= pump->nreports + n)
		return;
	pump->reports_size = pump->nreports + n + 64;
	pump->reports = repalloc(pump->reports, sizeof(FlytDelivery) * pump->reports_size);
}

/* Adds the outbox row's header called name, if it has one. */
static void
add_row_header(rd_kafka_headers_t *headers, Jsonb *jb, const char *name)
{
	JsonbValue	key;
	JsonbValue *v;

	if (jb == NULL)
		return;
	key.type = jbvString;
	key.val.string.val = (char *) name;
	key.val.string.len = strlen(name);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
	if (v != NULL && v->type == jbvString)
		rd_kafka_header_add(headers, name, -1, v->val.string.val, v->val.string.len);
}

/*
 * The record's headers, in the order the original's send path adds them:
 * flyt.instance-flow-headers (on the record), origin.application.id (its
 * producer interceptor: flyt_instance.application_id as raw UTF-8, on every
 * record) and __TypeId__ (Spring Kafka's JsonSerializer: the value's Java
 * class, absent when there is no value); then flyt.event-id, this
 * service's own.  The first and the last are stored with the row; the two
 * in between are added here, when the record is sent, as the original adds
 * them.
 */
static rd_kafka_headers_t *
kafka_headers(Jsonb *jb, const char *event_name, bool has_value)
{
	rd_kafka_headers_t *headers = rd_kafka_headers_new(4);
	const char *type_id = has_value ? flyt_value_type_id(event_name) : NULL;

	add_row_header(headers, jb, FLYT_HEADER_FLOW_HEADERS);
	rd_kafka_header_add(headers, FLYT_HEADER_ORIGIN_APPLICATION_ID, -1, flyt_application_id, -1);
	if (type_id != NULL)
		rd_kafka_header_add(headers, FLYT_HEADER_TYPE_ID, -1, type_id, -1);
	add_row_header(headers, jb, FLYT_HEADER_EVENT_ID);
	return headers;
}

/* Unix epoch milliseconds of a timestamp: a Kafka record's timestamp. */
static int64
unix_millis(TimestampTz ts)
{
	return ts / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
}

/* Sets the next scan no later than at (rows left waiting until then). */
static void
scan_no_later(FlytPump *pump, TimestampTz at)
{
	if (pump->next_retry_at == 0 || at < pump->next_retry_at)
		pump->next_retry_at = at;
}

/*
 * Per-key order.  Rows of one key (one instance) go to Kafka in id order: a
 * row is not sent while an earlier row of its key is in flight or waiting
 * for redelivery, because if that one then failed it would land after it.
 * Keys are tracked by a 32-bit hash; two keys that share one merely wait
 * for each other.
 */
static uint32
key_tag(const char *key, int len)
{
	uint32		h;

	if (key == NULL)
		return 0;
	h = hash_bytes((const unsigned char *) key, len);
	return h == 0 ? 1 : h;
}

static void
key_in_flight(FlytPump *pump, uint32 tag, int delta)
{
	bool		found;
	IdEntry    *e;

	if (tag == 0)
		return;
	e = idhash_insert(pump->inflight_keys, tag, &found);
	if (!found)
		e->tag = 0;
	e->tag += delta;
	if ((int32) e->tag <= 0)
		idhash_delete_item(pump->inflight_keys, e);
}

static bool
key_blocked(FlytPump *pump, uint32 tag)
{
	return tag != 0 && (idhash_lookup(pump->blocked, tag) != NULL ||
						idhash_lookup(pump->inflight_keys, tag) != NULL);
}

static void
block_key(FlytPump *pump, uint32 tag)
{
	bool		found;

	if (tag != 0)
		(void) idhash_insert(pump->blocked, tag, &found);
}

/*
 * Rows waiting for their redelivery (next_attempt_at ahead) are remembered
 * in pump->delayed instead of holding scan_from behind them: a row refused
 * by the brokers waits up to FLYT_MAX_REDELIVERY_MS, and every scan meanwhile
 * would walk again each row delivered since (deleted, but not removed while
 * some snapshot still sees it).  The scan from the head every
 * FLYT_PUMP_IDLE_SCAN_MS forgets them and finds them again, so that holds
 * for up to a second at a time, and a remembered row that was deleted or
 * changed meanwhile is forgotten within a second.  Only rows up to
 * scan_from need remembering: a scan meets the rows after it in id order.
 *
 * Is one of them due?  Then scans start at the head again, which finds it.
 */
static bool
delayed_row_due(FlytPump *pump, TimestampTz now)
{
	idhash_iterator it;
	IdEntry    *e;

	idhash_start_iterate(pump->delayed, &it);
	while ((e = idhash_iterate(pump->delayed, &it)) != NULL)
	{
		if (e->id <= pump->scan_from && e->since <= now)
			return true;
	}
	return false;
}

/*
 * A scan starts after scan_from, so it does not see the remembered rows
 * up to there: their keys stay blocked (a later row of the key must not
 * overtake them), and the earliest of them says when to scan again.  The
 * others are forgotten: the scan meets them, in id order.
 */
static void
block_delayed_keys(FlytPump *pump)
{
	idhash_iterator it;
	IdEntry    *e;

	idhash_start_iterate(pump->delayed, &it);
	while ((e = idhash_iterate(pump->delayed, &it)) != NULL)
	{
		if (e->id > pump->scan_from)
		{
			idhash_delete_item(pump->delayed, e);
			continue;
		}
		block_key(pump, e->tag);
		scan_no_later(pump, e->since);
	}
}

/* Is the row with this id in flight (a scan passes over it unread)? */
static bool
row_in_flight(int64 id, void *arg)
{
	FlytPump   *pump = (FlytPump *) arg;

	return pump->in_flight > 0 && id <= pump->max_sent_id &&
		idhash_lookup(pump->inflight, id) != NULL;
}

/*
 * Flushes the WAL up to lsn, counting the times the pump found it not
 * flushed that far (it flushed, or waited for another process's flush).
 */
static void
pump_flush(XLogRecPtr lsn)
{
	if (lsn > GetFlushRecPtr(NULL))
		pg_atomic_add_fetch_u64(&flyt_shared->pump_wal_flushes, 1);
	XLogFlush(lsn);				/* nothing to do when it is flushed already */
}

typedef enum RowDurability
{
	ROW_DURABLE,
	ROW_COMMIT_ENDING,			/* ask again once its backend has said */
	ROW_STANDBYS_LAG			/* ask again shortly */
} RowDurability;

/*
 * Is an outbox row durable: written by a transaction whose commit record
 * is flushed here and, when the server waits for synchronous standbys,
 * confirmed by them too?  A transaction that queued it through the
 * extension and committed with synchronous_commit other than off says
 * whether its commit record is flushed (flyt_commit_note, in shared.c),
 * right after it became visible: until then the row waits for the word,
 * which comes with a wake-up, unless the pump has waited for such words
 * long enough (patience_over); *ending says that a row was found so.  Any other
 * transaction (committed with synchronous_commit = off, as the worker's own
 * delivery and cleanup steps do; prepared; written by hand) may be visible
 * before it is durable, and a crash would lose it after Kafka got its
 * message: the commit log keeps the commit record's position of the
 * asynchronous ones, and the WAL is flushed up to it here.  That position
 * is kept per group of 32 transaction ids, the highest of the group's
 * asynchronous commits, so the flush may also cover later transactions
 * (bench/RESULTS.md, sixth and seventh sessions).  next lies above the id
 * of every row the scan can see.  The standbys are not waited for: while
 * they lag, nothing is sent and the caller tries again shortly; they are
 * asked once per scan (*standbys_ok), about everything written so far.
 */
static RowDurability
row_durable(TransactionId xmin, FullTransactionId next, bool patience_over,
			bool *ending, bool *standbys_ok)
{
	XLogRecPtr	lsn = InvalidXLogRecPtr;
	bool		confirmed;

	if (TransactionIdIsNormal(xmin))
	{
		FlytCommitNote note = flyt_commit_note(xmin, next);

		*ending = *ending || note == FLYT_COMMIT_ENDING;
		if (note == FLYT_COMMIT_ENDING && !patience_over)
			return ROW_COMMIT_ENDING;
		if (note != FLYT_COMMIT_FLUSHED)
		{
			/* as pg_xact_status: older ones may have left the commit log, durable long since */
			LWLockAcquire(XactTruncationLock, LW_SHARED);
			if (!TransactionIdPrecedes(xmin, ShmemVariableCache->oldestClogXid))
				(void) TransactionIdGetStatus(xmin, &lsn);
			LWLockRelease(XactTruncationLock);
		}
	}
	if (!XLogRecPtrIsInvalid(lsn))
		pump_flush(lsn);

	if (*standbys_ok || !SyncRepRequested())
		return ROW_DURABLE;
	LWLockAcquire(SyncRepLock, LW_SHARED);
	if (!(WalSndCtl->sync_standbys_status & SYNC_STANDBY_DEFINED))
	{
		LWLockRelease(SyncRepLock);
		*standbys_ok = true;
		return ROW_DURABLE;
	}
	LWLockRelease(SyncRepLock);

	/*
	 * Everything written so far, flushed and confirmed: the scan's snapshot
	 * was taken before, so this lies past every commit record it sees.  At
	 * a page start the insert position lies past the page header, which is
	 * not written yet: up to the end of the previous page.
	 */
	lsn = GetXLogInsertRecPtr();
	if (XLogSegmentOffset(lsn, wal_segment_size) == SizeOfXLogLongPHD)
		lsn -= SizeOfXLogLongPHD;
	else if (lsn % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		lsn -= SizeOfXLogShortPHD;
	pump_flush(lsn);
	LWLockAcquire(SyncRepLock, LW_SHARED);
	/* what a commit waits for, at most a flush (that is durable there) */
	confirmed = WalSndCtl->lsn[synchronous_commit == SYNCHRONOUS_COMMIT_REMOTE_WRITE ?
							   SYNC_REP_WAIT_WRITE : SYNC_REP_WAIT_FLUSH] >= lsn;
	LWLockRelease(SyncRepLock);
	*standbys_ok = confirmed;
	return confirmed ? ROW_DURABLE : ROW_STANDBYS_LAG;
}

/*
 * The transactions that may hold outbox ids they have not committed yet:
 * those that have taken a value from flyt.outbox_id_seq and are still
 * running (nextval keeps the sequence locked until the transaction ends),
 * but this one; with them the few that only looked at the sequence through
 * currval, setval or pg_sequence_last_value.  A transaction that has taken
 * no id (pg_dump, a report, a session idle in a transaction that never
 * queued a message) is none of them, however long it runs.  Waiting for
 * every running transaction kept scan_from where it was for as long as
 * any of those ran, and every scan then walked again every row delivered
 * and deleted since (a drain four times slower with a REPEATABLE READ
 * transaction open, bench/RESULTS.md).
 */
static void
note_running_transactions(FlytPump *pump)
{
	int			n;
	VirtualTransactionId *running = flyt_sequence_holders("outbox_id_seq", &n);

	if (pump->waiting != NULL)
		pfree(pump->waiting);
	pump->waiting = MemoryContextAlloc(pump->context, sizeof(VirtualTransactionId) * Max(n, 1));
	memcpy(pump->waiting, running, sizeof(VirtualTransactionId) * n);
	pump->nwaiting = n;
	pfree(running);
}

/* Have all the transactions noted by note_running_transactions ended? */
static bool
noted_transactions_ended(FlytPump *pump)
{
	while (pump->nwaiting > 0)
	{
		if (!VirtualXactLock(pump->waiting[pump->nwaiting - 1], false))
			return false;
		pump->nwaiting--;
	}
	return true;
}

/*
 * Hands up to room rows to the producer, in id order.  Returns how many
 * were handed over.
 *
 * Where a scan starts.  Ids come from flyt.outbox_id_seq (CACHE 1: in the
 * order they are handed out, to every session), but transactions commit
 * in any order, so a row may become visible behind rows already sent.
 * scan_from is an id up to which every row has been handed over or is
 * remembered as waiting for its redelivery (delayed_row_due); it only
 * moves, to next_from, in three steps:
 *  1. before a scan's snapshot, the last id the sequence handed out (L),
 *     then the transactions holding the lock nextval takes on the sequence
 *     (noted: each that has taken an id and is still running), then the
 *     scan: every row up to L that the snapshot cannot see belongs to a
 *     noted transaction (it took its id, and with it the lock, before L
 *     was read, so it still held the lock when they were noted, or it
 *     ended before the snapshot and is seen).  next_from proposes min(L,
 *     the last id up to which this scan handed everything over);
 *  2. once every noted transaction has ended (checked before a later
 *     scan's snapshot), rows up to next_from are all visible to that
 *     scan, which still starts at scan_from;
 *  3. scan_from moves as far toward next_from as that scan, and each
 *     after it, has handed everything over (no row up to next_from can
 *     appear any more).
 * With no transaction noted at step 1, steps 2 and 3 are that same
 * scan.  A row that is handed over and comes back (delivery failed, the
 * producer lost) sends scans to the head again (rescan_from_head); so do
 * a remembered row that is due, and the scan of every
 * FLYT_PUMP_IDLE_SCAN_MS, which finds rows whose ids did not come from the
 * sequence (written by hand).
 */
int
flyt_pump_send(FlytPump *pump, rd_kafka_t *producer, int room)
{
	TimestampTz now = GetCurrentTimestamp();
	FlytOutboxScan scan;
	FlytOutboxRow row;
	int64		cursor;
	int64		first_left = PG_INT64_MAX;	/* the first row seen and not handed over */
	bool		at_end = false; /* the scan saw every row after scan_from */
	int64		last_handed_out = 0;
	int			sent = 0;
	bool		standbys_ok = false;
	TransactionId durable_xmin = InvalidTransactionId;
	FullTransactionId next_xid;
	bool		saw_ending = false;
	bool		patience_over = pump->ending_since != 0 &&
		TimestampDifferenceExceeds(pump->ending_since, now, COMMIT_ENDING_PATIENCE_MS);

	room = Min(room, flyt_max_in_flight - pump->in_flight);
	pump->last_scan_at = now;
	idhash_reset(pump->blocked);
	pump->more = false;
	pump->next_retry_at = 0;
	if (room <= 0)
	{
		pump->more = true;
		return 0;
	}

	/* every message in flight gets one report: make room for them now */
	reserve_reports(pump, pump->in_flight + room);

	if (TimestampDifferenceExceeds(pump->last_full_scan_at, now, FLYT_PUMP_IDLE_SCAN_MS) ||
		delayed_row_due(pump, now))
	{
		rescan_from_head(pump);
		pump->last_full_scan_at = now;
	}
	block_delayed_keys(pump);
	/* steps 1 and 2, before the snapshot (see above) */
	if (pump->next_from != 0)
		pump->waiting_ended = pump->waiting_ended || noted_transactions_ended(pump);
	else
	{
		last_handed_out = flyt_sequence_last_value("outbox_id_seq");
		note_running_transactions(pump);
	}
	PushActiveSnapshot(GetTransactionSnapshot());
	next_xid = ReadNextFullTransactionId();	/* above every id the snapshot sees */

	/*
	 * One pass over the primary key from scan_from on, rows in flight
	 * passed over by their index entries (outbox_scan.c).
	 */
	flyt_outbox_scan_begin(&scan, GetActiveSnapshot(), pump->scan_from);
	for (;;)
	{
		rd_kafka_headers_t *kheaders;
		rd_kafka_resp_err_t err;
		IdEntry    *entry;
		bool		found;
		uint32		tag;

		if (!flyt_outbox_scan_next(&scan, row_in_flight, pump, &row))
		{
			at_end = true;
			break;
		}
		tag = key_tag(row.key, row.key_len);
		if (row.next_attempt_at > now)
		{
			/* remembered rather than left: later scans need not pass it */
			IdEntry    *delayed = idhash_insert(pump->delayed, row.id, &found);

			delayed->tag = tag;
			delayed->since = row.next_attempt_at;
			block_key(pump, tag);
			scan_no_later(pump, row.next_attempt_at);
			continue;
		}
		if (key_blocked(pump, tag))
		{
			/* its turn comes when the earlier row's report arrives */
			block_key(pump, tag);
			first_left = Min(first_left, row.id);
			continue;
		}

		/* rows of one transaction come together: each is looked up once */
		if (row.xmin != durable_xmin)
		{
			RowDurability durability = row_durable(row.xmin, next_xid, patience_over,
												   &saw_ending, &standbys_ok);

			if (durability == ROW_COMMIT_ENDING)
			{
				/* its backend wakes the worker once it has said; the key waits */
				block_key(pump, tag);
				first_left = Min(first_left, row.id);
				scan_no_later(pump, TimestampTzPlusMilliseconds(now, COMMIT_ENDING_WAIT_MS));
				continue;
			}
			if (durability == ROW_STANDBYS_LAG)
			{
				/* the synchronous standbys lag: look again shortly */
				scan_no_later(pump, TimestampTzPlusMilliseconds(now, STANDBY_WAIT_MS));
				first_left = Min(first_left, row.id);
				break;
			}
			durable_xmin = row.xmin;
		}
		flyt_outbox_scan_read_row(&scan, &row);
		kheaders = kafka_headers(row.headers, row.event_name, row.value != NULL);
		/* librdkafka copies the key and the value (F_COPY) */
		err = rd_kafka_producev(producer,
								RD_KAFKA_V_TOPIC(row.topic),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_KEY((void *) row.key, row.key_len),
								RD_KAFKA_V_VALUE((void *) row.value, row.value_len),
								RD_KAFKA_V_HEADERS(kheaders),
								RD_KAFKA_V_TIMESTAMP(unix_millis(row.created_at)),
								RD_KAFKA_V_OPAQUE((void *) (intptr_t) row.id),
								RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			rd_kafka_headers_destroy(kheaders);
			if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
			{
				pump->more = true;
				pump->queue_full = true;
				first_left = Min(first_left, row.id);
				break;
			}
			/*
			 * Refused outright (unknown topic, too large): a failed
			 * delivery, and the later rows of its key must wait for it.
			 */
			block_key(pump, tag);
			first_left = Min(first_left, row.id);
			/* room for this report and for every one still owed */
			reserve_reports(pump, pump->in_flight + (room - sent) + 1);
			pump->reports[pump->nreports].id = row.id;
			pump->reports[pump->nreports].err = err;
			pump->nreports++;
			continue;
		}
		pump->max_sent_id = Max(pump->max_sent_id, row.id);
		(void) idhash_delete(pump->delayed, row.id);
		entry = idhash_insert(pump->inflight, row.id, &found);
		entry->since = row.created_at;
		entry->tag = tag;
		entry->size = row_size(&row);
		entry->tid = row.tid;
		key_in_flight(pump, tag, 1);
		pump->in_flight++;
		pump->bytes_in_flight += entry->size;
		if (++sent >= room || pump->bytes_in_flight >= max_in_flight_bytes())
		{
			/* the rest is left for the next scan */
			pump->more = true;
			break;
		}
	}
	cursor = scan.last_id;
	flyt_outbox_scan_end(&scan);
	/* a scan that stopped early may not have come to those rows: no word */
	if (saw_ending)
		pump->ending_since = pump->ending_since != 0 ? pump->ending_since : now;
	else if (at_end)
		pump->ending_since = 0;

	/*
	 * Everything up to settled was handed over: up to the first row left
	 * (rows seen have ids up to the cursor), and no further than the scan
	 * looked; when it looked to the end, any id, as far as this snapshot
	 * goes.
	 */
	if (IsolationUsesXactSnapshot())
	{
		/* the snapshot is the transaction's, older than what step 1 read */
		rescan_from_head(pump);
	}
	else
	{
		int64		settled = first_left != PG_INT64_MAX ? first_left - 1 :
			at_end ? PG_INT64_MAX : cursor;

		if (pump->next_from != 0)
		{
			/* step 3, as far as this scan got */
			if (pump->waiting_ended)
				pump->scan_from = Max(pump->scan_from, Min(pump->next_from, settled));
			if (pump->scan_from >= pump->next_from)
				pump->next_from = 0;
		}
		else if (Min(last_handed_out, settled) > pump->scan_from)
		{
			/* step 1, and with nothing noted steps 2 and 3 too */
			pump->next_from = Min(last_handed_out, settled);
			pump->waiting_ended = pump->nwaiting == 0;
			if (pump->waiting_ended)
			{
				pump->scan_from = pump->next_from;
				pump->next_from = 0;
			}
		}
	}
	PopActiveSnapshot();
	return sent;
}
