/*-------------------------------------------------------------------------
 *
 * shared.c
 *	  State shared between the background worker and the backends.
 *
 * The shared memory segment exists only when flyt_instance is in
 * shared_preload_libraries; without it the SQL functions still work and
 * flyt_status() reports that the worker is not running.
 *
 * Backends also use this file to wake the worker: a transaction that queued
 * outbox rows sets the worker's latch when it commits (never before, so the
 * worker finds the rows), and adds what it counted to the shared counters
 * only then.  When it commits synchronously it also notes its transaction
 * ids for the pump, which then need not flush the WAL for its rows
 * (flyt_commit_note).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "shared.h"

FlytShared *flyt_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Counted by this backend's transaction, published at commit. */
#define FLYT_COUNTERS 3
static int64 pending[FLYT_COUNTERS];
static bool pending_wake = false;

/* The ids of this backend's committing transaction (note_commit_start). */
#define MAX_NOTED_CHILDREN (FLYT_DURABLE_SLOTS / 16)
static FullTransactionId noted[1 + MAX_NOTED_CHILDREN];
static int	nnoted = 0;

/* Counts as they were when each open subtransaction started. */
typedef struct SubCounts
{
	SubTransactionId subid;
	int64		counts[FLYT_COUNTERS];
} SubCounts;
static List *sub_counts = NIL;

static void
flyt_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(FlytShared)));
	RequestNamedLWLockTranche("flyt_instance", 1);
}

static void
flyt_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	flyt_shared = ShmemInitStruct("flyt_instance", sizeof(FlytShared), &found);
	if (!found)
	{
		memset(flyt_shared, 0, sizeof(FlytShared));
		flyt_shared->lock = &(GetNamedLWLockTranche("flyt_instance"))->lock;
		flyt_shared->state = FLYT_WORKER_NOT_RUNNING;
		pg_atomic_init_u64(&flyt_shared->registered, 0);
		pg_atomic_init_u64(&flyt_shared->retried, 0);
		pg_atomic_init_u64(&flyt_shared->deleted, 0);
		pg_atomic_init_u64(&flyt_shared->produced, 0);
		pg_atomic_init_u64(&flyt_shared->consumed, 0);
		pg_atomic_init_u64(&flyt_shared->dead_lettered, 0);
		pg_atomic_init_u64(&flyt_shared->flow_requests_sent, 0);
		pg_atomic_init_u64(&flyt_shared->flow_replies, 0);
		pg_atomic_init_u64(&flyt_shared->pump_wal_flushes, 0);
		for (int i = 0; i < FLYT_DURABLE_SLOTS; i++)
			pg_atomic_init_u64(&flyt_shared->durable_xids[i], 0);	/* no id */
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The full id of a transaction id that is not in the future: of the epoch
 * of the next one to be assigned, or of the one before.  Invalid for the
 * special ids.
 */
static FullTransactionId
full_xid(FullTransactionId next, TransactionId xid)
{
	uint32		epoch = EpochFromFullTransactionId(next);

	if (!TransactionIdIsNormal(xid))
		return InvalidFullTransactionId;
	if (xid >= XidFromFullTransactionId(next))
	{
		if (epoch == 0)
			return InvalidFullTransactionId;
		epoch--;
	}
	return FullTransactionIdFromEpochAndXid(epoch, xid);
}

/* A slot's value: the full transaction id and whether its commit is flushed. */
static inline uint64
note_value(FullTransactionId fxid, bool flushed)
{
	return (U64FromFullTransactionId(fxid) << 1) | (flushed ? 1 : 0);
}

static inline pg_atomic_uint64 *
note_slot(FullTransactionId fxid)
{
	return &flyt_shared->durable_xids[U64FromFullTransactionId(fxid) % FLYT_DURABLE_SLOTS];
}

/*
 * Called before the commit of a transaction that queued outbox rows.  When
 * it is to commit synchronously, notes its id and those of its
 * subtransactions as committing; note_commit_end says at commit whether the
 * commit record was flushed.  A transaction with many subtransactions notes
 * only its own id (the pump flushes for their rows, as for any it does not
 * know) rather than push other transactions' ids out.
 */
static void
note_commit_start(void)
{
	FullTransactionId top = GetTopFullTransactionIdIfAny();
	TransactionId *children;
	int			nchildren;

	nnoted = 0;
	if (synchronous_commit <= SYNCHRONOUS_COMMIT_OFF || !FullTransactionIdIsValid(top))
		return;
	noted[nnoted++] = top;
	nchildren = xactGetCommittedChildren(&children);
	if (nchildren <= MAX_NOTED_CHILDREN)
	{
		FullTransactionId next = ReadNextFullTransactionId();

		for (int i = 0; i < nchildren; i++)
		{
			FullTransactionId child = full_xid(next, children[i]);

			if (FullTransactionIdIsValid(child))
				noted[nnoted++] = child;
		}
	}
	for (int i = 0; i < nnoted; i++)
		pg_atomic_write_u64(note_slot(noted[i]), note_value(noted[i], false));
	/* before the commit shows: the pump sees the rows only after that */
	pg_write_barrier();
}

/*
 * Called when the transaction noted by note_commit_start has committed (it
 * shows as committed already) or aborted: its ids become flushed when its
 * commit record was, and are let go otherwise; a slot another transaction
 * has taken over meanwhile is left to it.
 */
static void
note_commit_end(bool committed)
{
	bool		flushed;

	if (nnoted == 0)
		return;					/* also every commit during recovery */
	flushed = committed && XactLastCommitEnd <= GetFlushRecPtr(NULL);
	for (int i = 0; i < nnoted; i++)
	{
		uint64		expected = note_value(noted[i], false);

		(void) pg_atomic_compare_exchange_u64(note_slot(noted[i]), &expected,
											  flushed ? note_value(noted[i], true) : 0);
	}
	nnoted = 0;
}

/*
 * What is known of the commit of the transaction (or subtransaction) with
 * this id, committed and visible, whose id is below next: FLYT_COMMIT_FLUSHED
 * when it queued outbox rows, committed with synchronous_commit other than
 * off and its backend found its commit record flushed right after the
 * commit; FLYT_COMMIT_ENDING in the moment between showing as committed
 * and saying so; FLYT_COMMIT_UNKNOWN for everything else
 * (committed without waiting, prepared, written by hand, noted over since,
 * no shared memory), which may or may not be durable.
 */
FlytCommitNote
flyt_commit_note(TransactionId xid, FullTransactionId next)
{
	FullTransactionId fxid;
	uint64		value;

	if (flyt_shared == NULL)
		return FLYT_COMMIT_UNKNOWN;
	fxid = full_xid(next, xid);
	if (!FullTransactionIdIsValid(fxid))
		return FLYT_COMMIT_UNKNOWN;
	/* read after what showed the transaction committed */
	pg_read_barrier();
	value = pg_atomic_read_u64(note_slot(fxid));
	if (value == note_value(fxid, true))
		return FLYT_COMMIT_FLUSHED;
	if (value == note_value(fxid, false))
		return FLYT_COMMIT_ENDING;
	return FLYT_COMMIT_UNKNOWN;
}

/*
 * Publishes what the transaction counted and wakes the worker, at commit;
 * notes the ids of a synchronous commit around it (note_commit_start).
 */
static void
flyt_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (pending_wake && flyt_shared != NULL)
				note_commit_start();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (flyt_shared != NULL)
			{
				/* before the worker is woken: it finds the ids flushed */
				note_commit_end(true);
				pg_atomic_add_fetch_u64(&flyt_shared->registered, pending[FLYT_COUNT_REGISTERED]);
				pg_atomic_add_fetch_u64(&flyt_shared->retried, pending[FLYT_COUNT_RETRIED]);
				pg_atomic_add_fetch_u64(&flyt_shared->deleted, pending[FLYT_COUNT_DELETED]);
				if (pending_wake)
				{
					Latch	   *latch = flyt_shared->worker_latch;

					/* the worker never waits on a latch it does not own */
					if (latch != NULL && flyt_shared->worker_pid != MyProcPid)
						SetLatch(latch);
				}
			}
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			if (flyt_shared != NULL)
				note_commit_end(false);	/* one that failed after pre-commit */
			/* a prepared transaction commits elsewhere: the worker's idle scan finds it */
			memset(pending, 0, sizeof(pending));
			pending_wake = false;
			sub_counts = NIL;	/* its memory goes with the transaction */
			break;
		default:
			break;
	}
}

/* Undoes the counts of an aborted subtransaction. */
static void
flyt_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	SubCounts  *top;

	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			{
				MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

				top = palloc(sizeof(SubCounts));
				top->subid = mySubid;
				memcpy(top->counts, pending, sizeof(pending));
				sub_counts = lcons(top, sub_counts);
				MemoryContextSwitchTo(old);
				break;
			}
		case SUBXACT_EVENT_COMMIT_SUB:
		case SUBXACT_EVENT_ABORT_SUB:
			if (sub_counts == NIL)
				break;
			top = linitial(sub_counts);
			if (top->subid != mySubid)
				break;
			if (event == SUBXACT_EVENT_ABORT_SUB)
				memcpy(pending, top->counts, sizeof(pending));
			sub_counts = list_delete_first(sub_counts);
			pfree(top);
			break;
		default:
			break;
	}
}

/*
 * Sets up the shared state (when preloaded) and the transaction callbacks.
 * Called from _PG_init.
 */
void
flyt_shared_init(void)
{
	if (process_shared_preload_libraries_in_progress)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = flyt_shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = flyt_shmem_startup;
	}
	RegisterXactCallback(flyt_xact_callback, NULL);
	RegisterSubXactCallback(flyt_subxact_callback, NULL);
}

/* Counts n changes of one kind, published if the transaction commits. */
void
flyt_count(FlytCounter counter, int64 n)
{
	pending[counter] += n;
}

/* Wakes the worker when the current transaction commits. */
void
flyt_wake_worker_at_commit(void)
{
	pending_wake = true;
}

const char *
flyt_worker_state_name(FlytWorkerState state)
{
	switch (state)
	{
		case FLYT_WORKER_NOT_RUNNING:
			return "not_running";
		case FLYT_WORKER_STARTING:
			return "starting";
		case FLYT_WORKER_STANDBY:
			return "standby";
		case FLYT_WORKER_WAITING_FOR_EXTENSION:
			return "waiting_for_extension";
		case FLYT_WORKER_KAFKA_OFF:
			return "kafka_off";
		case FLYT_WORKER_RUNNING:
			return "running";
		case FLYT_WORKER_STOPPING:
			return "stopping";
	}
	return "unknown";
}

const char *
flyt_circuit_state_name(FlytCircuitState state)
{
	switch (state)
	{
		case FLYT_CIRCUIT_CLOSED:
			return "CLOSED";
		case FLYT_CIRCUIT_HALF_OPEN:
			return "HALF_OPEN";
		case FLYT_CIRCUIT_OPEN:
			return "OPEN";
	}
	return "UNKNOWN";
}
