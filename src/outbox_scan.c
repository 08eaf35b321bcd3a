/*-------------------------------------------------------------------------
 *
 * outbox_scan.c
 *	  Reading flyt.outbox in id order through its primary key, without the
 *	  planner.
 *
 * The pump reads the outbox from a position on, in id order, and stops
 * when its window is full.  As a kept SPI plan that read depended on the
 * planner: a generic plan made from the statistics of a table that swings
 * between empty and a backlog of millions was once a sequential scan with
 * a sort, once a bitmap scan with a sort (bench/RESULTS.md), and each of
 * them read the whole backlog for every page, so a drain went quadratic.
 * This reads the primary key index forward from the position: the id
 * comes from the index entry, so the caller can pass over rows by id (the
 * pump's rows in flight) without a visit to the table; every other entry
 * is looked up in the table, which tells whether the scan's snapshot sees
 * the row.  What decides whether a row goes is read first, the rest only
 * for a row that goes.  The key and the value are handed over as they lie
 * in the buffer when they are not compressed or stored out of line, so the
 * value is copied once, by the producer.
 *
 * The caller runs inside a transaction and passes an MVCC snapshot that
 * stays registered or active until flyt_outbox_scan_end.  The page of the
 * current row (and the index page it was found on) stays pinned until the
 * next call: a vacuum of that page waits that long (the pump's send of one
 * row, at most a flush of the WAL).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/sysattr.h"
#include "catalog/pg_type_d.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "outbox_scan.h"

/* The columns read, in the order of FlytOutboxScan.attnums. */
enum
{
	COL_ID,
	COL_EVENT_NAME,
	COL_TOPIC,
	COL_KEY,
	COL_HEADERS,
	COL_VALUE,
	COL_CREATED_AT,
	COL_NEXT_ATTEMPT_AT,
	NCOLUMNS
};

StaticAssertDecl(NCOLUMNS == FLYT_OUTBOX_SCAN_COLUMNS, "the columns of FlytOutboxScan.attnums");

static const struct
{
	const char *name;
	Oid			type;			/* after domains are looked through */
}			columns[NCOLUMNS] =
{
	{"id", INT8OID},
	{"event_name", TEXTOID},
	{"topic", TEXTOID},
	{"key", TEXTOID},
	{"headers", JSONBOID},
	{"value", TEXTOID},
	{"created_at", TIMESTAMPTZOID},
	{"next_attempt_at", TIMESTAMPTZOID},
};

/*
 * Finds the columns by name, as the SQL would: the table may have been
 * made by an older version's install script and its upgrades.
 */
static void
find_columns(FlytOutboxScan *scan)
{
	TupleDesc	desc = RelationGetDescr(scan->rel);

	for (int c = 0; c < NCOLUMNS; c++)
	{
		scan->attnums[c] = InvalidAttrNumber;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), columns[c].name) == 0)
			{
				/* a domain (headers) is looked through; the others are the type */
				if (att->atttypid != columns[c].type &&
					getBaseType(att->atttypid) != columns[c].type)
					ereport(ERROR,
							(errcode(ERRCODE_DATATYPE_MISMATCH),
							 errmsg("column flyt.outbox.%s has type %s, expected %s",
									columns[c].name, format_type_be(att->atttypid),
									format_type_be(columns[c].type)),
							 errhint("Reinstall the extension: its table was changed by hand.")));
				scan->attnums[c] = att->attnum;
				break;
			}
		}
		if (scan->attnums[c] == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column flyt.outbox.%s does not exist", columns[c].name),
					 errhint("Reinstall the extension: its table was changed by hand.")));
	}
}

/* Opens flyt.outbox into scan->rel and finds its columns. */
static void
open_outbox(FlytOutboxScan *scan, LOCKMODE lockmode)
{
	scan->rel = table_openrv(makeRangeVar("flyt", "outbox", -1), lockmode);
	find_columns(scan);
}

/*
 * Starts a scan of the rows with ids greater than after, as the snapshot
 * sees them.
 */
void
flyt_outbox_scan_begin(FlytOutboxScan *scan, Snapshot snapshot, int64 after)
{
	Oid			indexid;
	ScanKeyData key;

	Assert(IsMVCCSnapshot(snapshot));
	memset(scan, 0, sizeof(*scan));
	open_outbox(scan, AccessShareLock);
	indexid = RelationGetPrimaryKeyIndex(scan->rel);
	if (!OidIsValid(indexid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("flyt.outbox has no primary key"),
				 errhint("Reinstall the extension: its table was changed by hand.")));
	scan->index = index_open(indexid, AccessShareLock);
	if (scan->index->rd_index->indnatts != 1 ||
		scan->index->rd_index->indkey.values[0] != scan->attnums[COL_ID])
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("the primary key of flyt.outbox is not (id)"),
				 errhint("Reinstall the extension: its table was changed by hand.")));

	scan->slot = table_slot_create(scan->rel, NULL);
	scan->row_context = AllocSetContextCreate(CurrentMemoryContext, "flyt_instance outbox row",
											  ALLOCSET_SMALL_SIZES);
	scan->scan = index_beginscan(scan->rel, scan->index, snapshot, 1, 0);
	scan->scan->xs_want_itup = true;	/* the id from the entry, the row only when wanted */
	ScanKeyInit(&key, 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
	index_rescan(scan->scan, &key, 1, NULL, 0);
	scan->last_id = after;
}

/* A text column, NUL-terminated, in the current memory context. */
static char *
text_column(TupleTableSlot *slot, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);

	return isnull ? NULL : text_to_cstring(DatumGetTextPP(d));
}

/*
 * A text column as it lies in the buffer when it can (not compressed, not
 * out of line), else detoasted into the current memory context.
 */
static const char *
text_bytes(TupleTableSlot *slot, AttrNumber attnum, int *len)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);
	text	   *t;

	if (isnull)
	{
		*len = 0;
		return NULL;
	}
	t = DatumGetTextPP(d);
	*len = VARSIZE_ANY_EXHDR(t);
	return VARDATA_ANY(t);
}

/*
 * The next row the caller may want: ids for which skip (when given) says
 * so are passed over without reading their rows.  Fills in what decides
 * whether the row goes now (id, key, next_attempt_at, xmin);
 * flyt_outbox_scan_read_row reads the rest.  Returns false at the end.
 * The row points into the scan's buffer and its row memory, both valid
 * until the next call.
 */
bool
flyt_outbox_scan_next(FlytOutboxScan *scan, FlytOutboxSkip skip, void *arg,
					  FlytOutboxRow *row)
{
	MemoryContext old;
	bool		isnull;

	MemoryContextReset(scan->row_context);
	for (;;)
	{
		ItemPointer tid;
		int64		id;

		CHECK_FOR_INTERRUPTS();
		tid = index_getnext_tid(scan->scan, ForwardScanDirection);
		if (tid == NULL)
			return false;
		id = DatumGetInt64(index_getattr(scan->scan->xs_itup, 1, scan->scan->xs_itupdesc, &isnull));
		if (skip != NULL && skip(id, arg))
		{
			scan->last_id = id;
			continue;
		}
		/* not there for this snapshot: deleted, or not committed when it was taken */
		if (!index_fetch_heap(scan->scan, scan->slot))
			continue;
		scan->last_id = id;
		break;
	}

	memset(row, 0, sizeof(*row));
	old = MemoryContextSwitchTo(scan->row_context);
	row->id = DatumGetInt64(slot_getattr(scan->slot, scan->attnums[COL_ID], &isnull));
	row->key = text_bytes(scan->slot, scan->attnums[COL_KEY], &row->key_len);
	row->next_attempt_at = DatumGetTimestampTz(slot_getattr(scan->slot, scan->attnums[COL_NEXT_ATTEMPT_AT],
														   &isnull));
	row->xmin = DatumGetTransactionId(slot_getsysattr(scan->slot, MinTransactionIdAttributeNumber, &isnull));
	row->tid = scan->slot->tts_tid;
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * The rest of the row flyt_outbox_scan_next returned, for a row that goes:
 * a row left for now (its key blocked, its redelivery ahead) costs no
 * decompression of its value and no copies.
 */
void
flyt_outbox_scan_read_row(FlytOutboxScan *scan, FlytOutboxRow *row)
{
	MemoryContext old = MemoryContextSwitchTo(scan->row_context);
	bool		isnull;
	Datum		d;

	row->event_name = text_column(scan->slot, scan->attnums[COL_EVENT_NAME]);
	row->topic = text_column(scan->slot, scan->attnums[COL_TOPIC]);
	d = slot_getattr(scan->slot, scan->attnums[COL_HEADERS], &isnull);
	row->headers = isnull ? NULL : DatumGetJsonbP(d);
	row->value = text_bytes(scan->slot, scan->attnums[COL_VALUE], &row->value_len);
	row->created_at = DatumGetTimestampTz(slot_getattr(scan->slot, scan->attnums[COL_CREATED_AT], &isnull));
	MemoryContextSwitchTo(old);
}

/* Ends the scan; the locks are kept until the transaction ends. */
void
flyt_outbox_scan_end(FlytOutboxScan *scan)
{
	index_endscan(scan->scan);
	ExecDropSingleTupleTableSlot(scan->slot);
	MemoryContextDelete(scan->row_context);
	index_close(scan->index, NoLock);
	table_close(scan->rel, NoLock);
	memset(scan, 0, sizeof(*scan));
}

/*
 * Deletes delivered rows where a scan found them: ids[i] is deleted at
 * tids[i] (the tid flyt_outbox_scan_next gave) when the row there is still
 * the one with that id, as the active snapshot sees it, and nobody changed
 * it since; no index probe, no executor.  Every other one (updated
 * meanwhile, as a redelivery's bookkeeping does, or gone, its page perhaps
 * truncated away) is left for the caller, which deletes those by id: their
 * ids are moved to the start of ids[] and their count returned.  So are all
 * of them when the table has triggers (the extension defines none; a
 * user's, or a foreign key to the outbox, must see the deletes), since the
 * executor is what fires them.  The caller runs inside a transaction with
 * an active snapshot.
 */
int
flyt_outbox_delete_found(int64 *ids, const ItemPointerData *tids, int n)
{
	FlytOutboxScan columns_of;
	Relation	rel;
	TupleTableSlot *slot;
	Snapshot	snapshot = GetActiveSnapshot();
	CommandId	cid = GetCurrentCommandId(true);
	BlockNumber nblocks;
	int			nleft = 0;

	if (n == 0)
		return 0;
	memset(&columns_of, 0, sizeof(columns_of));
	open_outbox(&columns_of, RowExclusiveLock);
	rel = columns_of.rel;
	if (rel->trigdesc != NULL)
	{
		table_close(rel, NoLock);
		return n;
	}
	/* no truncation can run meanwhile: it needs a lock that conflicts with ours */
	nblocks = RelationGetNumberOfBlocks(rel);
	slot = table_slot_create(rel, NULL);
	for (int i = 0; i < n; i++)
	{
		ItemPointerData tid = tids[i];
		bool		isnull;
		bool		deleted = false;

		CHECK_FOR_INTERRUPTS();
		if (ItemPointerIsValid(&tid) && ItemPointerGetBlockNumber(&tid) < nblocks &&
			table_tuple_fetch_row_version(rel, &tid, snapshot, slot) &&
			DatumGetInt64(slot_getattr(slot, columns_of.attnums[COL_ID], &isnull)) == ids[i] &&
			!isnull)
		{
			TM_FailureData tmfd;

			ExecClearTuple(slot);
			deleted = table_tuple_delete(rel, &tid, cid, snapshot, InvalidSnapshot,
										 true, &tmfd, false) == TM_Ok;
		}
		if (!deleted)
			ids[nleft++] = ids[i];
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	CommandCounterIncrement();
	return nleft;
}
