/*-------------------------------------------------------------------------
 *
 * flowreq.c
 *	  Flow headers asked of fint-flyt-history-service, as the original does.
 *
 * The Java service never stored an instance's flow headers: on every retry
 * and cleanup it asked fint-flyt-history-service for those of the
 * instance's last instance-registered event, with a Kafka request-reply
 * (INTEROP.md section 2).  flyt_instance stores them, but the instances
 * imported from the Java service's database (and any stored without) have
 * none, so it asks the same way:
 *
 *   request  {org}.{ctx}.request.instance-flow-headers-for-registered-instance.by.instance-id
 *            key null, value the instance id as a bare JSON number, headers
 *            kafka_replyTopic (the reply topic's name), kafka_correlationId
 *            (16 raw bytes of a random UUID), origin.application.id and
 *            __TypeId__ java.lang.Long;
 *   reply    {org}.{ctx}.reply.{application_id}.instance-flow-headers-for-registered-instance
 *            value InstanceFlowHeaders or null (history-service has none),
 *            kafka_correlationId copied from the request.
 *
 * The hand-over.  Backends never touch librdkafka: a backend that needs
 * headers takes slots in shared memory (FlytShared.flow_requests), each
 * with the instance id, a fresh correlation id and its own PGPROC, sets the
 * worker's latch and waits on its own latch, at most
 * flyt_instance.flow_headers_timeout (the original's 15 s), interruptibly.
 * The worker sends every pending slot on its next pass.  Its consumer
 * subscribes to the reply topic with the other consumed topics; a reply
 * whose correlation id matches a slot stores the headers on the instance
 * (UPDATE of flyt.instance.flow_headers, in the transaction of the
 * consumed batch), and once that transaction committed the slot is marked
 * answered and its backend woken; it reads the headers from the instance
 * with a fresh snapshot.  The waiting backend holds no lock the worker
 * needs: a retry's KEY SHARE lock on the instance does not conflict with
 * that UPDATE.  Replies that match no slot (late ones, the Java service's)
 * are skipped.  The cleanup takes slots nobody waits for: the worker frees
 * those when their reply is applied or their time is up.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "flowreq.h"
#include "guc.h"
#include "outbox.h"
#include "plans.h"
#include "shared.h"
#include "store.h"
#include "wire.h"

#define HEADER_REPLY_TOPIC "kafka_replyTopic"
#define HEADER_CORRELATION_ID "kafka_correlationId"
#define REQUEST_TYPE_ID "java.lang.Long"

/* How often a backend waiting for a free slot looks again. */
#define SLOT_POLL_MS 100

/* Slots the cleanup may hold at once (nobody waits on them). */
#define MAX_UNATTENDED (FLYT_FLOW_REQUEST_SLOTS / 2)

/* After twice the timeout and this, the worker frees a slot a backend left. */
#define SLOT_GRACE_MS 5000

static SPIPlanPtr store_plan = NULL;
static bool exit_callback_registered = false;

/* ---------------------------------------------------------------------------
 * Backends
 * ---------------------------------------------------------------------------
 */

/* Can the worker ask at all?  Not when it does not run or Kafka is off. */
bool
flyt_flow_can_ask(void)
{
	bool		can;

	if (flyt_shared == NULL)
		return false;
	LWLockAcquire(flyt_shared->lock, LW_SHARED);
	can = flyt_shared->worker_pid != 0 && flyt_shared->state == FLYT_WORKER_RUNNING;
	LWLockRelease(flyt_shared->lock);
	return can;
}

static void
wake_worker(void)
{
	Latch	   *latch = flyt_shared->worker_latch;

	if (latch != NULL && flyt_shared->worker_pid != MyProcPid)
		SetLatch(latch);
}

/* Fresh correlation ids for n requests, made before the lock is taken. */
static pg_uuid_t *
new_correlation_ids(int n)
{
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * n);

	flyt_new_uuids(ids, n);
	return ids;
}

/*
 * Takes a free slot for instance_id with the given correlation id (caller
 * holds the lock exclusively; nothing here can fail); -1 when all are taken.
 */
static int
take_slot(int64 instance_id, const pg_uuid_t *correlation, PGPROC *waiter, uint32 *generation)
{
	for (int s = 0; s < FLYT_FLOW_REQUEST_SLOTS; s++)
	{
		FlytFlowRequest *r = &flyt_shared->flow_requests[s];

		if (r->state != FLYT_FLOW_FREE)
			continue;
		memcpy(r->correlation, correlation->data, sizeof(r->correlation));
		r->state = FLYT_FLOW_PENDING;
		r->generation = ++flyt_shared->flow_request_generation;
		r->instance_id = instance_id;
		r->waiter = waiter;
		r->requested_at = GetCurrentTimestamp();
		r->sent_at = 0;
		*generation = r->generation;
		return s;
	}
	return -1;
}

static FlytFlowOutcome
outcome_of(FlytFlowRequestState state)
{
	switch (state)
	{
		case FLYT_FLOW_ANSWERED:
			return FLYT_FLOW_OUTCOME_ANSWERED;
		case FLYT_FLOW_UNKNOWN:
			return FLYT_FLOW_OUTCOME_UNKNOWN;
		case FLYT_FLOW_FAILED:
			return FLYT_FLOW_OUTCOME_UNAVAILABLE;
		default:
			return FLYT_FLOW_OUTCOME_TIMEOUT;
	}
}

/*
 * At backend exit, frees every slot this backend waits on: a FATAL error
 * (pg_terminate_backend, a lost client) or postmaster death leaves the wait
 * without the PG_FINALLY that frees them otherwise.
 */
static void
release_slots_at_exit(int code, Datum arg)
{
	if (flyt_shared == NULL || MyProc == NULL)
		return;
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	for (int s = 0; s < FLYT_FLOW_REQUEST_SLOTS; s++)
	{
		FlytFlowRequest *r = &flyt_shared->flow_requests[s];

		if (r->waiter == MyProc && r->state != FLYT_FLOW_FREE)
		{
			r->state = FLYT_FLOW_FREE;
			r->waiter = NULL;
		}
	}
	LWLockRelease(flyt_shared->lock);
}

/* Frees the slots still held (slot >= 0) whose generation is still ours. */
static void
release_slots(int *slots, const uint32 *generations, int n)
{
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		FlytFlowRequest *r;

		if (slots[i] < 0)
			continue;
		r = &flyt_shared->flow_requests[slots[i]];
		if (r->generation == generations[i])
		{
			r->state = FLYT_FLOW_FREE;
			r->waiter = NULL;
		}
		slots[i] = -1;
	}
	LWLockRelease(flyt_shared->lock);
}

/*
 * Asks history-service for the flow headers of ids[0..n), all at once, and
 * waits for the answers, at most flyt_instance.flow_headers_timeout; the
 * wait can be cancelled.  outcomes[i] says what became of ids[i]; an
 * answered one has its headers stored on the instance (read them with a
 * new snapshot).  The caller holds no lock the worker needs to store them.
 */
void
flyt_flow_headers_fetch(const int64 *ids, int n, FlytFlowOutcome *outcomes)
{
	int		   *slots;
	uint32	   *generations;
	pg_uuid_t  *correlations;
	TimestampTz deadline;
	volatile int submitted = 0;

	for (int i = 0; i < n; i++)
		outcomes[i] = FLYT_FLOW_OUTCOME_TIMEOUT;
	if (n == 0)
		return;
	if (!flyt_flow_can_ask())
	{
		for (int i = 0; i < n; i++)
			outcomes[i] = FLYT_FLOW_OUTCOME_UNAVAILABLE;
		return;
	}

	slots = palloc(sizeof(int) * n);
	generations = palloc(sizeof(uint32) * n);
	correlations = new_correlation_ids(n);
	if (!exit_callback_registered)
	{
		before_shmem_exit(release_slots_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}
	for (int i = 0; i < n; i++)
		slots[i] = -1;
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), flyt_flow_headers_timeout_ms);

	PG_TRY();
	{
		int			done = 0;

		for (;;)
		{
			bool		took = false;
			TimestampTz now;
			long		wait_ms;

			LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
			while (submitted < n)
			{
				int			s = take_slot(ids[submitted], &correlations[submitted], MyProc,
											  &generations[submitted]);

				if (s < 0)
					break;
				slots[submitted++] = s;
				took = true;
			}
			for (int i = 0; i < submitted; i++)
			{
				FlytFlowRequest *r;

				if (slots[i] < 0)
					continue;
				r = &flyt_shared->flow_requests[slots[i]];
				if (r->generation != generations[i])
				{
					/* cannot happen: only we free our slots */
					slots[i] = -1;
					done++;
					continue;
				}
				if (r->state == FLYT_FLOW_ANSWERED || r->state == FLYT_FLOW_UNKNOWN ||
					r->state == FLYT_FLOW_FAILED)
				{
					outcomes[i] = outcome_of(r->state);
					r->state = FLYT_FLOW_FREE;
					r->waiter = NULL;
					slots[i] = -1;
					done++;
				}
			}
			LWLockRelease(flyt_shared->lock);
			if (took)
				wake_worker();
			if (done == n)
				break;

			now = GetCurrentTimestamp();
			if (now >= deadline)
				break;
			wait_ms = (long) ((deadline - now + 999) / 1000);
			if (submitted < n)
				wait_ms = Min(wait_ms, SLOT_POLL_MS);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Max(wait_ms, 1), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		release_slots(slots, generations, submitted);
	}
	PG_END_TRY();
	/* never sent: no request slot was free in time */
	for (int i = submitted; i < n; i++)
		outcomes[i] = FLYT_FLOW_OUTCOME_UNAVAILABLE;
	pfree(slots);
	pfree(generations);
	pfree(correlations);
}

/*
 * Asks for the flow headers of ids[0..n) without waiting (the cleanup):
 * returns how many of the first ids got a slot; the worker sends them and
 * stores what comes back.  0 when the worker cannot ask.
 */
int
flyt_flow_headers_request_nowait(const int64 *ids, int n)
{
	int			taken = 0;
	int			unattended = 0;
	pg_uuid_t  *correlations;

	if (n == 0 || !flyt_flow_can_ask())
		return 0;
	correlations = new_correlation_ids(n);
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	/* at most half of the slots for nobody's waits: retries keep the rest */
	for (int s = 0; s < FLYT_FLOW_REQUEST_SLOTS; s++)
		if (flyt_shared->flow_requests[s].state != FLYT_FLOW_FREE &&
			flyt_shared->flow_requests[s].waiter == NULL)
			unattended++;
	while (taken < n && unattended + taken < MAX_UNATTENDED)
	{
		uint32		generation;

		if (take_slot(ids[taken], &correlations[taken], NULL, &generation) < 0)
			break;
		taken++;
	}
	LWLockRelease(flyt_shared->lock);
	if (taken > 0)
		wake_worker();
	return taken;
}

/*
 * Why an instance still has no flow headers after asking: a clause for
 * error messages ("... has no flow headers: <clause>").
 */
const char *
flyt_flow_outcome_detail(FlytFlowOutcome outcome)
{
	switch (outcome)
	{
		case FLYT_FLOW_OUTCOME_ANSWERED:
			return "fint-flyt-history-service answered, but not visibly to this transaction (it is not READ COMMITTED); they are stored for the next one";
		case FLYT_FLOW_OUTCOME_UNKNOWN:
			return "fint-flyt-history-service has no instance-registered event of it";
		case FLYT_FLOW_OUTCOME_TIMEOUT:
			return "fint-flyt-history-service did not answer within flyt_instance.flow_headers_timeout";
		case FLYT_FLOW_OUTCOME_UNAVAILABLE:
			return "they could not be asked of fint-flyt-history-service (the worker does not run, Kafka is off, no request slot was free, or the request could not be sent)";
	}
	return "";
}

/* ---------------------------------------------------------------------------
 * The worker: sending
 * ---------------------------------------------------------------------------
 */

/* The delivery report's opaque of slot s: an address only requests use. */
static char request_tags[FLYT_FLOW_REQUEST_SLOTS];
static uint32 sent_generation[FLYT_FLOW_REQUEST_SLOTS];

/* Marks slot s failed when it is still the request sent; wakes its waiter. */
static void
request_failed(int s, uint32 generation)
{
	FlytFlowRequest *r = &flyt_shared->flow_requests[s];

	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	if (r->generation == generation && r->state == FLYT_FLOW_SENT)
	{
		if (r->waiter != NULL)
		{
			r->state = FLYT_FLOW_FAILED;
			SetLatch(&r->waiter->procLatch);
		}
		else
			r->state = FLYT_FLOW_FREE;
	}
	LWLockRelease(flyt_shared->lock);
}

/*
 * Sends every pending request (a pass of the worker, connected to Kafka);
 * frees the cleanup's requests whose time is up.
 */
void
flyt_flow_requests_send(rd_kafka_t *producer)
{
	int			pending[FLYT_FLOW_REQUEST_SLOTS];
	int64		instance_ids[FLYT_FLOW_REQUEST_SLOTS];
	uint8		correlations[FLYT_FLOW_REQUEST_SLOTS][16];
	int			npending = 0;
	TimestampTz now = GetCurrentTimestamp();
	char	   *request_topic;
	char	   *reply_topic;

	if (flyt_shared == NULL)
		return;
	/* the worker runs Kafka only with org_id set: these do not fail */
	request_topic = flyt_request_topic_name();
	reply_topic = flyt_reply_topic_name();
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	for (int s = 0; s < FLYT_FLOW_REQUEST_SLOTS; s++)
	{
		FlytFlowRequest *r = &flyt_shared->flow_requests[s];

		if (r->state == FLYT_FLOW_PENDING)
		{
			r->state = FLYT_FLOW_SENT;
			r->sent_at = now;
			sent_generation[s] = r->generation;
			pending[npending] = s;
			instance_ids[npending] = r->instance_id;
			memcpy(correlations[npending], r->correlation, 16);
			npending++;
		}
		else if (r->waiter == NULL && r->state != FLYT_FLOW_FREE &&
				 TimestampDifferenceExceeds(r->requested_at, now, flyt_flow_headers_timeout_ms))
			r->state = FLYT_FLOW_FREE;	/* the cleanup's, unanswered */
		else if (r->state != FLYT_FLOW_FREE &&
				 TimestampDifferenceExceeds(r->requested_at, now,
											2 * flyt_flow_headers_timeout_ms + SLOT_GRACE_MS))
		{
			/* its backend is long past its deadline and did not free it */
			r->state = FLYT_FLOW_FREE;
			r->waiter = NULL;
		}
	}
	LWLockRelease(flyt_shared->lock);
	if (npending == 0)
		return;

	for (int i = 0; i < npending; i++)
	{
		int			s = pending[i];
		char		value[32];
		rd_kafka_headers_t *headers = rd_kafka_headers_new(4);
		rd_kafka_resp_err_t err;

		snprintf(value, sizeof(value), INT64_FORMAT, instance_ids[i]);
		rd_kafka_header_add(headers, HEADER_REPLY_TOPIC, -1, reply_topic, -1);
		rd_kafka_header_add(headers, HEADER_CORRELATION_ID, -1, correlations[i], 16);
		rd_kafka_header_add(headers, FLYT_HEADER_ORIGIN_APPLICATION_ID, -1, flyt_application_id, -1);
		rd_kafka_header_add(headers, FLYT_HEADER_TYPE_ID, -1, REQUEST_TYPE_ID, -1);
		err = rd_kafka_producev(producer,
								RD_KAFKA_V_TOPIC(request_topic),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_VALUE(value, strlen(value)),
								RD_KAFKA_V_HEADERS(headers),
								RD_KAFKA_V_OPAQUE(&request_tags[s]),
								RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			rd_kafka_headers_destroy(headers);
			request_failed(s, sent_generation[s]);
			continue;
		}
		pg_atomic_add_fetch_u64(&flyt_shared->flow_requests_sent, 1);
	}
}

/*
 * A delivery report: true when it is a request's (then handled here), false
 * when it belongs to the outbox.
 */
bool
flyt_flow_request_delivery(const rd_kafka_message_t *msg)
{
	char	   *tag = msg->_private;
	int			s;

	if (tag < request_tags || tag >= request_tags + FLYT_FLOW_REQUEST_SLOTS)
		return false;
	s = (int) (tag - request_tags);
	if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR && flyt_shared != NULL)
	{
		ereport(LOG,
				(errmsg("flyt_instance: a flow headers request could not be sent: %s",
						rd_kafka_err2str(msg->err))));
		request_failed(s, sent_generation[s]);
	}
	return true;
}

/* ---------------------------------------------------------------------------
 * The worker: replies, applied in the consumer's batch transaction
 * ---------------------------------------------------------------------------
 */

/* Outcomes of this batch, made known once it committed. */
static FlytFlowRequestState batch_outcome[FLYT_FLOW_REQUEST_SLOTS];
static uint32 batch_generation[FLYT_FLOW_REQUEST_SLOTS];

void
flyt_flow_replies_reset(void)
{
	memset(batch_outcome, 0, sizeof(batch_outcome));
}

/* The slot a reply's kafka_correlationId names, or -1. */
static int
slot_of_reply(const rd_kafka_message_t *msg, uint32 *generation, int64 *instance_id)
{
	rd_kafka_headers_t *headers;
	const void *value;
	size_t		size;
	int			found = -1;

	if (rd_kafka_message_headers(msg, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		rd_kafka_header_get_last(headers, HEADER_CORRELATION_ID, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		value == NULL || size != 16 || flyt_shared == NULL)
		return -1;
	LWLockAcquire(flyt_shared->lock, LW_SHARED);
	for (int s = 0; s < FLYT_FLOW_REQUEST_SLOTS; s++)
	{
		FlytFlowRequest *r = &flyt_shared->flow_requests[s];

		if (r->state == FLYT_FLOW_SENT && memcmp(r->correlation, value, 16) == 0)
		{
			found = s;
			*generation = r->generation;
			*instance_id = r->instance_id;
			break;
		}
	}
	LWLockRelease(flyt_shared->lock);
	return found;
}

/*
 * Applies one message of the reply topic (connected to SPI, in the batch's
 * transaction): when it answers a request of ours, stores the headers on
 * the instance that has none.  Headers that are not InstanceFlowHeaders
 * raise an error: the message becomes a dead letter and the request times
 * out.  Other replies are skipped.
 */
void
flyt_flow_reply_apply(const rd_kafka_message_t *msg)
{
	static const Oid argtypes[] = {INT8OID, JSONBOID, INT8OID, TEXTOID, TEXTOID, INT8OID};
	uint32		generation = 0;
	int64		instance_id = 0;
	int			s = slot_of_reply(msg, &generation, &instance_id);
	FlytFlowHeaders headers;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	if (s < 0)
		return;
	if (msg->payload == NULL)
	{
		batch_outcome[s] = FLYT_FLOW_UNKNOWN;
		batch_generation[s] = generation;
		return;
	}
	flyt_parse_flow_headers((const char *) msg->payload, msg->len, &headers);
	/* the headers of this instance's instance-registered: its id, whatever they say */
	json_object_set_new(headers.json, "instanceId", json_integer((json_int_t) instance_id));

	flyt_plan(&store_plan,
			  "UPDATE flyt.instance SET flow_headers = $2, source_application_id = $3, "
			  "  source_application_integration_id = $4, source_application_instance_id = $5, "
			  "  integration_id = $6 "
			  "WHERE id OPERATOR(pg_catalog.=) $1 AND flow_headers IS NULL",
			  6, argtypes);
	values[0] = Int64GetDatum(instance_id);
	values[1] = JsonbPGetDatum(flyt_json_to_jsonb(headers.json));
	flyt_flow_header_columns(&headers, &values[2], &nulls[2]);
	flyt_execute(store_plan, values, nulls, false, 0, SPI_OK_UPDATE);
	batch_outcome[s] = FLYT_FLOW_ANSWERED;
	batch_generation[s] = generation;
}

/*
 * After a round of a consumed batch committed (called after every round:
 * the next round starts with flyt_flow_replies_reset): the requests it
 * answered are answered, and their backends woken (the cleanup's freed).
 */
void
flyt_flow_replies_committed(void)
{
	if (flyt_shared == NULL)
		return;
	for (int s = 0; s < FLYT_FLOW_REQUEST_SLOTS; s++)
	{
		FlytFlowRequest *r = &flyt_shared->flow_requests[s];

		if (batch_outcome[s] == FLYT_FLOW_FREE)
			continue;
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		if (r->generation == batch_generation[s] && r->state == FLYT_FLOW_SENT)
		{
			pg_atomic_add_fetch_u64(&flyt_shared->flow_replies, 1);
			if (r->waiter != NULL)
			{
				r->state = batch_outcome[s];
				SetLatch(&r->waiter->procLatch);
			}
			else
				r->state = FLYT_FLOW_FREE;
		}
		LWLockRelease(flyt_shared->lock);
		batch_outcome[s] = FLYT_FLOW_FREE;
	}
}
