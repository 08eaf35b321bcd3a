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
 * (flyt_committed_durably).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
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

/* At most this many subtransactions' ids are noted (note_durable_commit). */
#define MAX_NOTED_CHILDREN (FLYT_DURABLE_SLOTS / 16)

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
			pg_atomic_init_u64(&flyt_shared->durable_xids[i],
							   U64FromFullTransactionId(InvalidFullTransactionId));
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

/*
 * Notes one transaction id.  No barrier is needed: the commit that follows
 * takes ProcArrayLock, as does the snapshot in which the pump sees it
 * committed.
 */
static void
note_durable(FullTransactionId fxid)
{
	if (FullTransactionIdIsValid(fxid))
		pg_atomic_write_u64(&flyt_shared->durable_xids[U64FromFullTransactionId(fxid) % FLYT_DURABLE_SLOTS],
							U64FromFullTransactionId(fxid));
}

/*
 * Called before the commit of a transaction that queued outbox rows.  When
 * it is to commit synchronously, makes that certain (ForceSyncCommit: a
 * later change of synchronous_commit, by another extension's callback say,
 * cannot undo it) and notes its id and those of its subtransactions for the
 * pump: its commit record is flushed before it shows as committed.  A
 * transaction with many subtransactions notes only its own id (the pump
 * flushes for their rows, as for any it does not know) rather than push
 * other transactions' ids out.
 */
static void
note_durable_commit(void)
{
	TransactionId *children;
	int			nchildren;
	FullTransactionId next;

	if (synchronous_commit <= SYNCHRONOUS_COMMIT_OFF ||
		!FullTransactionIdIsValid(GetTopFullTransactionIdIfAny()))
		return;
	ForceSyncCommit();
	note_durable(GetTopFullTransactionIdIfAny());
	nchildren = xactGetCommittedChildren(&children);
	if (nchildren == 0 || nchildren > MAX_NOTED_CHILDREN)
		return;
	next = ReadNextFullTransactionId();
	for (int i = 0; i < nchildren; i++)
		note_durable(full_xid(next, children[i]));
}

/*
 * Did the transaction (or subtransaction) with this id, committed and
 * visible, flush its commit record before it became visible?  True only for
 * what note_durable_commit noted; false for everything else (committed
 * without waiting, prepared, written by hand, noted over since, or without
 * the shared memory), which may or may not be durable.
 */
bool
flyt_committed_durably(TransactionId xid)
{
	FullTransactionId fxid;

	if (flyt_shared == NULL)
		return false;
	fxid = full_xid(ReadNextFullTransactionId(), xid);
	return FullTransactionIdIsValid(fxid) &&
		pg_atomic_read_u64(&flyt_shared->durable_xids[U64FromFullTransactionId(fxid) % FLYT_DURABLE_SLOTS]) ==
		U64FromFullTransactionId(fxid);
}

/*
 * Publishes what the transaction counted and wakes the worker, at commit;
 * notes a synchronous commit before it (note_durable_commit).
 */
static void
flyt_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			/* before the commit record: the worker may see the rows at once after it */
			if (pending_wake && flyt_shared != NULL)
				note_durable_commit();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (flyt_shared != NULL)
			{
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
