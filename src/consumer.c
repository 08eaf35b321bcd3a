/*-------------------------------------------------------------------------
 *
 * consumer.c
 *	  Exactly-once consumption of instance-received and instance-dispatched.
 *
 * The database, not Kafka, knows how far the consumer got: a batch of
 * messages is applied in one transaction (no subtransaction per message),
 * and flyt.consumer_offset is written in that same transaction.  Runs of
 * instance-received messages are read and validated one by one and stored
 * together, one statement per table; should that fail, the batch is
 * applied again message by message, each in an SPI connection of its own
 * (so that its memory goes with it), which finds the message at fault.  On
 * partition assignment the consumer seeks to the stored offsets (the
 * group's committed offset only where the database has none, so the
 * extension takes over where the Java service stopped), and a message below
 * the stored offset is never applied again.  After each batch the offsets
 * are also committed to Kafka, asynchronously, for lag monitoring.
 *
 * A message that cannot be applied rolls the batch back; the worker then
 * applies the messages before it again, writes it as a flyt.dead_letter row
 * (and an instance-registration-error event when its headers could be
 * read) in the same transaction, and goes on with the rest.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "consumer.h"
#include "flowreq.h"
#include "guc.h"
#include "outbox.h"
#include "plans.h"
#include "shared.h"
#include "store.h"
#include "wire.h"

static bool is_transient(int sqlerrcode);
static FlytOffset *find_position(List *positions, const char *topic, int32 partition);

static SPIPlanPtr load_plan = NULL;
static SPIPlanPtr offset_plan = NULL;
static SPIPlanPtr dead_letter_plan = NULL;

void
flyt_consumer_init(FlytConsumer *consumer)
{
	memset(consumer, 0, sizeof(*consumer));
	consumer->applying = -1;
	consumer->context = AllocSetContextCreate(TopMemoryContext, "flyt_instance consumer",
											  ALLOCSET_SMALL_SIZES);
}

/* Forgets everything tied to the Kafka handle (it was closed). */
void
flyt_consumer_reset(FlytConsumer *consumer)
{
	MemoryContextReset(consumer->context);
	consumer->offsets = NIL;
	consumer->loaded = false;
	consumer->subscribed = false;
	consumer->more = false;
	consumer->failed = false;
}

static FlytOffset *
find_offset(FlytConsumer *consumer, const char *topic, int32 partition)
{
	ListCell   *lc;

	foreach(lc, consumer->offsets)
	{
		FlytOffset *o = lfirst(lc);

		if (o->partition == partition && strcmp(o->topic, topic) == 0)
			return o;
	}
	return NULL;
}

/* The stored next offset of a partition; -1 when none is stored. */
int64
flyt_consumer_stored_offset(FlytConsumer *consumer, const char *topic, int32 partition)
{
	FlytOffset *o = find_offset(consumer, topic, partition);

	return o != NULL ? o->next_offset : -1;
}

static void
remember_offset(FlytConsumer *consumer, const char *topic, int32 partition, int64 next_offset)
{
	FlytOffset *o = find_offset(consumer, topic, partition);

	if (o == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(consumer->context);

		o = palloc(sizeof(FlytOffset));
		o->topic = pstrdup(topic);
		o->partition = partition;
		consumer->offsets = lappend(consumer->offsets, o);
		MemoryContextSwitchTo(old);
	}
	o->next_offset = next_offset;
}

/*
 * Reads flyt.consumer_offset into memory, so that a rebalance (served
 * inside librdkafka's poll) needs no database access.  The worker is the
 * only writer of the table, so the copy stays exact.  Caller: in a
 * transaction, connected to SPI.
 */
void
flyt_consumer_load_offsets(FlytConsumer *consumer)
{
	uint64		n;

	flyt_plan(&load_plan, "SELECT topic, kafka_partition, next_offset FROM flyt.consumer_offset",
			  0, NULL);
	n = flyt_execute(load_plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	consumer->offsets = NIL;
	MemoryContextReset(consumer->context);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		remember_offset(consumer, SPI_getvalue(tuple, desc, 1),
						DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull)),
						DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull)));
	}
	consumer->loaded = true;
}

/*
 * Subscribes to the consumed topics: instance-received, instance-dispatched
 * and the reply topic of the flow-headers request-reply (flowreq.c), all in
 * the group application_id, as the original's listeners are.
 */
bool
flyt_consumer_subscribe(FlytConsumer *consumer, rd_kafka_t *rk)
{
	rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(3);
	rd_kafka_resp_err_t err;

	rd_kafka_topic_partition_list_add(topics, flyt_topic_name(FLYT_EVENT_RECEIVED), RD_KAFKA_PARTITION_UA);
	rd_kafka_topic_partition_list_add(topics, flyt_topic_name(FLYT_EVENT_DISPATCHED), RD_KAFKA_PARTITION_UA);
	rd_kafka_topic_partition_list_add(topics, flyt_reply_topic_name(), RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		ereport(LOG,
				(errmsg("flyt_instance: could not subscribe to the consumed topics: %s",
						rd_kafka_err2str(err))));
		return false;
	}
	consumer->subscribed = true;
	if (flyt_shared != NULL)
	{
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		flyt_shared->subscribed = true;
		flyt_shared->assignment_waiting_since = GetCurrentTimestamp();
		flyt_shared->npartitions = 0;
		LWLockRelease(flyt_shared->lock);
	}
	return true;
}

/*
 * Publishes the assignment for flyt_status(): the partitions, and since when
 * the consumer has been waiting when it has none.
 */
static void
publish_assignment(FlytConsumer *consumer, rd_kafka_topic_partition_list_t *partitions)
{
	bool		none = partitions == NULL || partitions->cnt == 0;

	if (flyt_shared == NULL)
		return;
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	if (!none)
		flyt_shared->assignment_waiting_since = 0;
	else if (flyt_shared->assignment_waiting_since == 0)
		flyt_shared->assignment_waiting_since = GetCurrentTimestamp();
	flyt_shared->npartitions = 0;
	for (int i = 0; partitions != NULL && i < partitions->cnt &&
		 flyt_shared->npartitions < FLYT_MAX_PARTITIONS; i++)
	{
		rd_kafka_topic_partition_t *p = &partitions->elems[i];
		FlytPartitionState *s = &flyt_shared->partitions[flyt_shared->npartitions++];
		FlytOffset *o = find_offset(consumer, p->topic, p->partition);

		strlcpy(s->topic, p->topic, FLYT_TOPIC_LEN);
		s->partition = p->partition;
		s->next_offset = o ? o->next_offset : -1;
		s->high_watermark = -1;
	}
	LWLockRelease(flyt_shared->lock);
}

/*
 * The rebalance callback, on the worker's thread inside a consumer poll.
 * Assigned partitions start at the offset the database holds; where it
 * holds none, at the group's committed offset (and the earliest without
 * one).  Nothing here touches the database or can raise an error.
 */
void
flyt_consumer_rebalance(FlytConsumer *consumer, rd_kafka_t *rk, rd_kafka_resp_err_t err,
						rd_kafka_topic_partition_list_t *partitions)
{
	bool		cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	rd_kafka_error_t *error = NULL;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
	{
		for (int i = 0; i < partitions->cnt; i++)
		{
			rd_kafka_topic_partition_t *p = &partitions->elems[i];
			FlytOffset *o = find_offset(consumer, p->topic, p->partition);

			p->offset = o ? o->next_offset : RD_KAFKA_OFFSET_STORED;
		}
		if (cooperative)
			error = rd_kafka_incremental_assign(rk, partitions);
		else if (rd_kafka_assign(rk, partitions) != RD_KAFKA_RESP_ERR_NO_ERROR)
			consumer->failed = true;
	}
	else
	{
		if (cooperative)
			error = rd_kafka_incremental_unassign(rk, partitions);
		else
			(void) rd_kafka_assign(rk, NULL);
		if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
			consumer->failed = true;
	}
	if (error != NULL)
	{
		consumer->failed = true;
		rd_kafka_error_destroy(error);
	}

	/* the whole assignment, not the change (cooperative rebalances are incremental) */
	{
		rd_kafka_topic_partition_list_t *assignment = NULL;

		if (rd_kafka_assignment(rk, &assignment) == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			publish_assignment(consumer, assignment);
			rd_kafka_topic_partition_list_destroy(assignment);
		}
	}
}

/*
 * Takes up to max messages from the consumer without waiting.  Errors the
 * consumer reports instead of messages are logged and skipped.
 */
int
flyt_consumer_poll(FlytConsumer *consumer, rd_kafka_t *rk, rd_kafka_message_t **messages, int max)
{
	int			n = 0;

	consumer->more = false;
	while (n < max)
	{
		rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 0);

		if (msg == NULL)
			return n;
		if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				ereport(LOG,
						(errmsg("flyt_instance: consumer: %s", rd_kafka_message_errstr(msg))));
			rd_kafka_message_destroy(msg);
			continue;
		}
		messages[n++] = msg;
	}
	consumer->more = true;
	return n;
}

/* bytea Datum of raw bytes. */
static Datum
bytes_datum(const void *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), data, len);
	return PointerGetDatum(b);
}

/* The Kafka headers of a message as a JSON object (hex for non-UTF-8 values). */
static char *
headers_json(const rd_kafka_message_t *msg)
{
	rd_kafka_headers_t *headers;
	json_t	   *object = json_object();
	const char *name;
	const void *value;
	size_t		size;
	char	   *text;

	if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
		{
			json_t	   *v = NULL;

			/* text as is; bytes that are not (NUL, invalid UTF-8) as \x hex */
			if (value == NULL)
				v = json_null();
			else if (memchr(value, '\0', size) == NULL)
				v = json_stringn((const char *) value, size);
			if (v == NULL)
			{
				StringInfoData hex;

				initStringInfo(&hex);
				appendStringInfoString(&hex, "\\x");
				for (size_t k = 0; k < size; k++)
					appendStringInfo(&hex, "%02x", ((const unsigned char *) value)[k]);
				v = json_string(hex.data);
			}
			json_object_set_new(object, name, v);
		}
	}
	text = flyt_json_dump(object);
	json_decref(object);
	return text;
}

/*
 * Writes the dead-letter row of a message that could not be applied;
 * minimal leaves out its key, headers and value.
 */
static void
dead_letter(const rd_kafka_message_t *msg, const char *topic, ErrorData *edata, bool minimal)
{
	static const Oid argtypes[] = {TEXTOID, INT4OID, INT8OID, TEXTOID, BYTEAOID, JSONBOID,
	BYTEAOID, JSONBOID, TEXTOID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char		sqlstate[6];
	json_t	   *details;

	flyt_plan(&dead_letter_plan,
			  "INSERT INTO flyt.dead_letter (topic, kafka_partition, kafka_offset, original_message_id, "
			  "  message_key, headers, original_message_payload, failure_transience, "
			  "  message_delivery_attempts, failure_details) "
			  "VALUES ($1, $2, $3, $4, $5, $6, $7, $9, 1, $8)",
			  9, argtypes);

	strlcpy(sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(sqlstate));
	details = json_pack("{s:s, s:s}", "errorMessage", edata->message ? edata->message : "",
						"sqlstate", sqlstate);
	if (edata->detail)
		json_object_set_new(details, "detail", json_string(edata->detail));
	if (edata->context)
		json_object_set_new(details, "context", json_string(edata->context));

	values[0] = CStringGetTextDatum(topic);
	values[1] = Int32GetDatum(msg->partition);
	values[2] = Int64GetDatum(msg->offset);
	values[3] = CStringGetTextDatum(psprintf("%s/%d/%lld", topic, (int) msg->partition,
											 (long long) msg->offset));
	if (msg->key != NULL && !minimal)
		values[4] = bytes_datum(msg->key, msg->key_len);
	else
		nulls[4] = 'n';
	if (!minimal)
		values[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(headers_json(msg)));
	else
		nulls[5] = 'n';
	if (msg->payload != NULL && !minimal)
		values[6] = bytes_datum(msg->payload, msg->len);
	else
		nulls[6] = 'n';
	values[7] = DirectFunctionCall1(jsonb_in, CStringGetDatum(flyt_json_dump(details)));
	values[8] = CStringGetTextDatum(is_transient(edata->sqlerrcode) ? "TRANSIENT" : "PERMANENT");
	json_decref(details);

	flyt_execute(dead_letter_plan, values, nulls, false, 0, SPI_OK_INSERT);
	if (flyt_shared != NULL)
		pg_atomic_add_fetch_u64(&flyt_shared->dead_lettered, 1);
	/* never the payload: it may hold personal data */
	ereport(LOG,
			(errmsg("flyt_instance: message %s/%d/%lld moved to flyt.dead_letter: %s",
					topic, (int) msg->partition, (long long) msg->offset, edata->message)));
}

typedef struct DeadLetter
{
	const rd_kafka_message_t *msg;
	const char *topic;
	ErrorData  *edata;
	bool		received;
	bool		minimal;		/* only the position and the error */
} DeadLetter;

static void message_flow_headers(const rd_kafka_message_t *msg, FlytFlowHeaders *headers);

typedef struct ReadHeaders
{
	const rd_kafka_message_t *msg;
	char	   *text;			/* the flow headers as they are sent on */
} ReadHeaders;

static void
read_headers(void *arg)
{
	ReadHeaders *r = arg;
	FlytFlowHeaders headers;

	message_flow_headers(r->msg, &headers);
	r->text = flyt_flow_headers_text(headers.json);
}

static void
dead_letter_isolated(void *arg)
{
	DeadLetter *d = arg;

	dead_letter(d->msg, d->topic, d->edata, d->minimal);
	/* an instance-registration-error needs readable flow headers */
	if (d->received && !d->minimal)
	{
		ReadHeaders r = {d->msg, NULL};
		ErrorData  *unreadable = flyt_run_isolated(read_headers, &r);

		if (unreadable == NULL)
			flyt_outbox_enqueue_error(FLYT_ERROR_REGISTRATION, NULL, r.text);
		else
			FreeErrorData(unreadable);
	}
}

/*
 * Records a message that could not be applied.  Even recording it may fail
 * on what the message carries; then a row with only its position and the
 * error is written, so that a bad message never stops consumption.
 */
static void
record_failure(const rd_kafka_message_t *msg, const char *topic, ErrorData *edata, bool received)
{
	DeadLetter	d = {msg, topic, edata, received, false};
	ErrorData  *second = flyt_run_isolated(dead_letter_isolated, &d);

	if (second != NULL)
	{
		ereport(LOG,
				(errmsg("flyt_instance: could not record message %s/%d/%lld with its content: %s",
						topic, (int) msg->partition, (long long) msg->offset, second->message)));
		dead_letter(msg, topic, edata, true);
		FreeErrorData(second);
	}
}

/* Reads the flow headers of a consumed message, or raises an error. */
static void
message_flow_headers(const rd_kafka_message_t *msg, FlytFlowHeaders *headers)
{
	rd_kafka_headers_t *kheaders;
	const void *value = NULL;
	size_t		size = 0;

	if (rd_kafka_message_headers(msg, &kheaders) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		rd_kafka_header_get_last(kheaders, FLYT_HEADER_FLOW_HEADERS, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		value == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message has no %s header", FLYT_HEADER_FLOW_HEADERS)));
	flyt_parse_flow_headers((const char *) value, size, headers);
}


/* The flow headers and the instance of an instance-received message, or an error. */
static json_t *
read_received(const rd_kafka_message_t *msg, FlytFlowHeaders *headers)
{
	message_flow_headers(msg, headers);
	if (msg->payload == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("instance-received message has no value")));
	return flyt_parse_instance((const char *) msg->payload, msg->len);
}

/*
 * Applies one message; raises an error when it cannot be applied.  It runs
 * in an SPI connection of its own, whose memory (parse trees, jsonb, tuple
 * tables) goes when it is done: a batch holds one message's worth at a time.
 */
static void
apply_message(const rd_kafka_message_t *msg, bool received)
{
	FlytFlowHeaders headers;

	flyt_spi_connect();
	if (received)
		(void) flyt_store_instance(&headers, read_received(msg, &headers));
	else
	{
		message_flow_headers(msg, &headers);
		if (!headers.has_instance_id)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("headers.instanceId is required"),
					 errdetail("instance-dispatched names the instance to delete in headers.instanceId.")));
		(void) flyt_dispatch_instance(&headers);
	}
	flyt_spi_finish();
}

/*
 * Registrations read from a run of instance-received messages, stored
 * together when the run ends or grows large (flush_registrations).
 */
typedef struct PendingRegistrations
{
	MemoryContext context;		/* what they hold */
	FlytRegistration *regs;
	int			n;
	size_t		bytes;			/* of the messages they came from */
	TimestampTz created_at;
} PendingRegistrations;

/*
 * Registrations are stored once their messages hold this many bytes, so
 * that a batch of large messages holds a few of them at a time (what a
 * registration holds until stored is about four times its message), and a
 * batch of ordinary ones (a few kB each) is stored at once.
 */
#define PENDING_FLUSH_BYTES (1024 * 1024)

static void
flush_registrations(FlytConsumer *consumer, PendingRegistrations *pending)
{
	if (pending->n == 0)
		return;
	consumer->applying = FLYT_APPLYING_SET;
	flyt_spi_connect();
	flyt_store_registrations(pending->regs, pending->n, pending->created_at);
	flyt_spi_finish();
	consumer->applying = FLYT_APPLYING_NONE;
	pending->n = 0;
	pending->bytes = 0;
	MemoryContextReset(pending->context);
}

static FlytOffset *
find_position(List *positions, const char *topic, int32 partition)
{
	ListCell   *lc;

	foreach(lc, positions)
	{
		FlytOffset *o = lfirst(lc);

		if (o->partition == partition && strcmp(o->topic, topic) == 0)
			return o;
	}
	return NULL;
}

/*
 * Errors that say nothing about the message (it may well apply later):
 * serialization failures, deadlocks, locks not granted in time.
 */
bool
flyt_consumer_error_is_transient(int sqlerrcode)
{
	return is_transient(sqlerrcode);
}

static bool
is_transient(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_TRANSACTION_ROLLBACK ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/* Moves a partition's next offset forward in a list of positions. */
static List *
advance(List *positions, const char *topic, int32 partition, int64 next_offset)
{
	FlytOffset *o = find_position(positions, topic, partition);

	if (o != NULL)
	{
		o->next_offset = Max(o->next_offset, next_offset);
		return positions;
	}
	o = palloc(sizeof(FlytOffset));
	o->topic = pstrdup(topic);
	o->partition = partition;
	o->next_offset = next_offset;
	return lappend(positions, o);
}

/*
 * Applies messages[start, end) of a batch in the caller's transaction
 * (connected to SPI), then writes their offsets.  No subtransaction per
 * message: a batch of hundreds would overflow the 64 subtransaction ids a
 * backend keeps in shared memory and slow down every snapshot in the
 * cluster.  A message that fails raises its error with
 * consumer->applying set to its index; the caller rolls back and calls
 * again with bad = that index and the error: messages[start, bad) are
 * applied again, message bad becomes a dead letter, and the offsets cover
 * it.  Then the caller goes on after it.
 */
void
flyt_consumer_apply(FlytConsumer *consumer, rd_kafka_message_t **messages, int start,
					int end, int bad, ErrorData *bad_error)
{
	static const Oid offset_types[] = {TEXTOID, INT4OID, INT8OID};
	char	   *received_topic = flyt_topic_name(FLYT_EVENT_RECEIVED);
	char	   *reply_topic = flyt_reply_topic_name();
	List	   *positions = NIL;	/* FlytOffset of this batch */
	ListCell   *lc;
	MemoryContext message_context;
	PendingRegistrations pending;
	int			stop = bad >= 0 ? bad + 1 : end;

	consumer->applying = FLYT_APPLYING_NONE;	/* an error outside a message is
												 * not its fault */
	flyt_flow_replies_reset();	/* what an earlier, rolled back round answered */
	message_context = AllocSetContextCreate(CurrentMemoryContext, "flyt_instance consumed message",
											ALLOCSET_DEFAULT_SIZES);
	pending.context = AllocSetContextCreate(CurrentMemoryContext, "flyt_instance registrations",
											ALLOCSET_DEFAULT_SIZES);
	pending.regs = palloc(sizeof(FlytRegistration) * Max(stop - start, 1));
	pending.n = 0;
	pending.bytes = 0;
	pending.created_at = GetCurrentTransactionStartTimestamp();

	/*
	 * What earlier rounds of this batch committed counts as applied: a
	 * message a rebalance fetched again later in the same batch must not
	 * be applied twice.
	 */
	for (int i = 0; i < start; i++)
	{
		rd_kafka_message_t *msg = messages[i];
		const char *topic = rd_kafka_topic_name(msg->rkt);
		FlytOffset *stored = find_offset(consumer, topic, msg->partition);

		if (stored == NULL || msg->offset >= stored->next_offset)
			positions = advance(positions, topic, msg->partition, msg->offset + 1);
	}

	for (int i = start; i < stop; i++)
	{
		rd_kafka_message_t *msg = messages[i];
		const char *topic = rd_kafka_topic_name(msg->rkt);
		FlytOffset *stored = find_offset(consumer, topic, msg->partition);
		FlytOffset *batch = find_position(positions, topic, msg->partition);
		bool		received = strcmp(topic, received_topic) == 0;
		bool		reply = !received && strcmp(topic, reply_topic) == 0;

		/* applied in this batch already (a rebalance re-fetched it) */
		if (batch != NULL && msg->offset < batch->next_offset)
			continue;

		/*
		 * Applied before.  After a seek to the stored offset this cannot
		 * happen, so it means the consumer's position was reset (an offset
		 * out of range, a topic recreated): say so loudly.
		 */
		if (stored != NULL && msg->offset < stored->next_offset)
		{
			ereport(WARNING,
					(errmsg("flyt_instance: skipped message %s/%d/%lld below the stored offset %lld",
							topic, (int) msg->partition, (long long) msg->offset,
							(long long) stored->next_offset),
					 errdetail("The consumer's position was reset below what flyt.consumer_offset records as applied."),
					 errhint("If the topic was recreated, delete its rows from flyt.consumer_offset and restart the worker.")));
			continue;
		}

		if (received && i != bad && !consumer->one_by_one)
		{
			/* read and validated now, stored with the rest of its run */
			MemoryContext old = MemoryContextSwitchTo(message_context);
			FlytFlowHeaders headers;
			json_t	   *payload;

			consumer->applying = i;
			payload = read_received(msg, &headers);
			MemoryContextSwitchTo(pending.context);
			flyt_prepare_registration(&headers, payload, pending.created_at,
									  &pending.regs[pending.n++]);
			pending.bytes += msg->len;
			consumer->applying = FLYT_APPLYING_NONE;
			MemoryContextSwitchTo(old);
			MemoryContextReset(message_context);
			if (pending.bytes >= PENDING_FLUSH_BYTES)
				flush_registrations(consumer, &pending);
		}
		else
		{
			/* what came before it first, in order */
			flush_registrations(consumer, &pending);
			if (i == bad)
				record_failure(msg, topic, bad_error, received);
			else
			{
				MemoryContext old = MemoryContextSwitchTo(message_context);

				consumer->applying = i;
				if (reply)
				{
					flyt_spi_connect();
					flyt_flow_reply_apply(msg);
					flyt_spi_finish();
				}
				else
					apply_message(msg, received);
				consumer->applying = FLYT_APPLYING_NONE;
				MemoryContextSwitchTo(old);
				MemoryContextReset(message_context);
			}
		}
		positions = advance(positions, topic, msg->partition, msg->offset + 1);
	}
	flush_registrations(consumer, &pending);
	MemoryContextDelete(message_context);
	MemoryContextDelete(pending.context);

	flyt_plan(&offset_plan,
			  "INSERT INTO flyt.consumer_offset (topic, kafka_partition, next_offset, updated_at) "
			  "VALUES ($1, $2, $3, pg_catalog.now()) "
			  "ON CONFLICT (topic, kafka_partition) DO UPDATE "
			  "SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at",
			  3, offset_types);
	foreach(lc, positions)
	{
		FlytOffset *o = lfirst(lc);
		Datum		values[3];

		values[0] = CStringGetTextDatum(o->topic);
		values[1] = Int32GetDatum(o->partition);
		values[2] = Int64GetDatum(o->next_offset);
		flyt_execute(offset_plan, values, NULL, false, 0, SPI_OK_INSERT);
	}
}

/*
 * After the batch's transaction committed: remember the new offsets, commit
 * them to Kafka asynchronously (for lag monitoring and a rollback to the
 * Java service), publish them, and free the messages.
 */
void
flyt_consumer_committed(FlytConsumer *consumer, rd_kafka_t *rk, rd_kafka_message_t **messages, int n)
{
	rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(4);
	int			applied = 0;

	/*
	 * The bookkeeping first: should it fail (out of memory), the caller
	 * still holds every message, and the worker reads the offsets from the
	 * database again.  Then the messages go, which cannot fail.
	 */
	for (int i = 0; i < n; i++)
	{
		rd_kafka_message_t *msg = messages[i];
		const char *topic = rd_kafka_topic_name(msg->rkt);
		FlytOffset *stored = find_offset(consumer, topic, msg->partition);

		if (stored == NULL || msg->offset >= stored->next_offset)
		{
			rd_kafka_topic_partition_t *p;

			remember_offset(consumer, topic, msg->partition, msg->offset + 1);
			p = rd_kafka_topic_partition_list_find(offsets, topic, msg->partition);
			if (p == NULL)
				p = rd_kafka_topic_partition_list_add(offsets, topic, msg->partition);
			p->offset = msg->offset + 1;
			applied++;
		}
	}
	for (int i = 0; i < n; i++)
		rd_kafka_message_destroy(messages[i]);
	if (offsets->cnt > 0)
		(void) rd_kafka_commit(rk, offsets, 1);
	rd_kafka_topic_partition_list_destroy(offsets);

	if (flyt_shared != NULL)
	{
		pg_atomic_add_fetch_u64(&flyt_shared->consumed, applied);
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		for (int i = 0; i < flyt_shared->npartitions; i++)
		{
			FlytPartitionState *s = &flyt_shared->partitions[i];
			FlytOffset *o = find_offset(consumer, s->topic, s->partition);

			if (o != NULL)
				s->next_offset = o->next_offset;
		}
		LWLockRelease(flyt_shared->lock);
	}
}
