/*-------------------------------------------------------------------------
 *
 * shared.h
 *	  State shared between the background worker and the backends: what
 *	  flyt_status() and flyt_metrics() report, the worker's latch, counters.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_SHARED_H
#define FLYT_SHARED_H

#include "postgres.h"

#include "access/transam.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/* What the worker is doing (docs/worker.md). */
typedef enum FlytWorkerState
{
	FLYT_WORKER_NOT_RUNNING = 0,
	FLYT_WORKER_STARTING,
	FLYT_WORKER_STANDBY,
	FLYT_WORKER_WAITING_FOR_EXTENSION,
	FLYT_WORKER_KAFKA_OFF,
	FLYT_WORKER_RUNNING,
	FLYT_WORKER_STOPPING
} FlytWorkerState;

typedef enum FlytCircuitState
{
	FLYT_CIRCUIT_CLOSED = 0,
	FLYT_CIRCUIT_HALF_OPEN = 1,
	FLYT_CIRCUIT_OPEN = 2
} FlytCircuitState;

#define FLYT_CIRCUIT_EVENTS 16
#define FLYT_REASON_LEN 160
#define FLYT_MAX_PARTITIONS 64
#define FLYT_TOPIC_LEN 256
#define FLYT_LATENCY_SAMPLES 1024
#define FLYT_DURABLE_SLOTS 4096

typedef struct FlytCircuitEvent
{
	TimestampTz at;
	FlytCircuitState state;
	char		reason[FLYT_REASON_LEN];
} FlytCircuitEvent;

typedef struct FlytPartitionState
{
	char		topic[FLYT_TOPIC_LEN];
	int32		partition;
	int64		next_offset;	/* next offset to apply, -1 unknown */
	int64		high_watermark; /* -1 unknown */
} FlytPartitionState;

/*
 * One request for the flow headers of an instance (flowreq.c): a backend (or
 * the cleanup) fills it, the worker sends it and applies the reply.
 */
#define FLYT_FLOW_REQUEST_SLOTS 256

typedef enum FlytFlowRequestState
{
	FLYT_FLOW_FREE = 0,
	FLYT_FLOW_PENDING,			/* waits for the worker to send it */
	FLYT_FLOW_SENT,				/* sent; waits for the reply */
	FLYT_FLOW_ANSWERED,			/* the reply's headers are stored on the instance */
	FLYT_FLOW_UNKNOWN,			/* the reply was null: history-service has none */
	FLYT_FLOW_FAILED			/* could not be sent */
} FlytFlowRequestState;

typedef struct FlytFlowRequest
{
	FlytFlowRequestState state;
	uint32		generation;		/* changes with every use of the slot */
	int64		instance_id;
	uint8		correlation[16];	/* kafka_correlationId: a random UUID's bytes */
	struct PGPROC *waiter;		/* woken when it is answered; NULL: nobody waits */
	TimestampTz requested_at;
	TimestampTz sent_at;
} FlytFlowRequest;

typedef struct FlytShared
{
	LWLock	   *lock;			/* protects everything but the atomics */

	/* the worker */
	pid_t		worker_pid;
	Latch	   *worker_latch;
	FlytWorkerState state;
	TimestampTz started_at;
	char		reason[FLYT_REASON_LEN];	/* why not running/connected */

	/* Kafka */
	bool		connected;
	FlytCircuitState circuit;
	bool		circuit_reachable;	/* a broker answered a probe since the
									 * circuit last changed state */
	int			circuit_event_count;	/* total ever recorded */
	FlytCircuitEvent circuit_events[FLYT_CIRCUIT_EVENTS];	/* ring */
	int			in_flight;
	int64		in_flight_bytes;	/* their sizes (pump.c, row_size) */

	/* consumer */
	bool		subscribed;
	TimestampTz assignment_waiting_since;	/* subscribed, and no partition
											 * assigned since then; 0 when
											 * assigned or not subscribed */
	int			npartitions;
	FlytPartitionState partitions[FLYT_MAX_PARTITIONS];

	/* cleanup */
	TimestampTz next_cleanup_at;	/* 0 when not scheduled */

	/* flow headers asked of fint-flyt-history-service (flowreq.c) */
	uint32		flow_request_generation;
	FlytFlowRequest flow_requests[FLYT_FLOW_REQUEST_SLOTS];
	pg_atomic_uint64 flow_requests_sent;
	pg_atomic_uint64 flow_replies;	/* replies to requests still waiting */

	/* counters (any backend) */
	pg_atomic_uint64 registered;
	pg_atomic_uint64 retried;
	pg_atomic_uint64 deleted;
	pg_atomic_uint64 produced;
	pg_atomic_uint64 consumed;
	pg_atomic_uint64 dead_lettered;
	pg_atomic_uint64 pump_wal_flushes;	/* WAL flushes the pump had to make */

	/*
	 * Transactions that queued outbox rows and commit synchronously
	 * (flyt_commit_note): full transaction id times 2, plus 1 once the commit
	 * record is known flushed; each in the slot of its id modulo
	 * FLYT_DURABLE_SLOTS, the latest overwriting; 0 for none.
	 */
	pg_atomic_uint64 durable_xids[FLYT_DURABLE_SLOTS];

	/* produce latency: commit of the change -> acknowledgement */
	uint64		latency_count;
	double		latency_sum_seconds;
	int			latency_next;
	float		latency_samples[FLYT_LATENCY_SAMPLES];	/* seconds, ring */
} FlytShared;

/* NULL unless the library was preloaded. */
extern FlytShared *flyt_shared;

typedef enum FlytCounter
{
	FLYT_COUNT_REGISTERED,
	FLYT_COUNT_RETRIED,
	FLYT_COUNT_DELETED
} FlytCounter;

/* What a backend noted of a commit for the pump (flyt_commit_note). */
typedef enum FlytCommitNote
{
	FLYT_COMMIT_UNKNOWN,		/* not noted: flush to be sure */
	FLYT_COMMIT_ENDING,			/* visible, its backend yet to say how it ended */
	FLYT_COMMIT_FLUSHED			/* its backend found its commit record flushed */
} FlytCommitNote;

extern void flyt_shared_init(void);
extern void flyt_count(FlytCounter counter, int64 n);
extern void flyt_wake_worker_at_commit(void);
extern FlytCommitNote flyt_commit_note(TransactionId xid, FullTransactionId next);
extern const char *flyt_worker_state_name(FlytWorkerState state);
extern const char *flyt_circuit_state_name(FlytCircuitState state);

#endif							/* FLYT_SHARED_H */
