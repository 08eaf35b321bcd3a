/*-------------------------------------------------------------------------
 *
 * outbox_scan.h
 *	  Reading flyt.outbox in id order through its primary key, without the
 *	  planner.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_OUTBOX_SCAN_H
#define FLYT_OUTBOX_SCAN_H

#include "postgres.h"

#include "access/genam.h"
#include "datatype/timestamp.h"
#include "executor/tuptable.h"
#include "storage/itemptr.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/snapshot.h"

/*
 * One row of flyt.outbox as the pump reads it: flyt_outbox_scan_next fills
 * in id, key, next_attempt_at and xmin, flyt_outbox_scan_read_row the rest.
 */
typedef struct FlytOutboxRow
{
	int64		id;
	char	   *event_name;
	char	   *topic;
	const char *key;			/* not NUL-terminated; NULL when the row has none */
	int			key_len;
	Jsonb	   *headers;		/* NULL when the row has none */
	const char *value;			/* not NUL-terminated; NULL when the row has none */
	int			value_len;
	TimestampTz created_at;
	TimestampTz next_attempt_at;
	TransactionId xmin;
	ItemPointerData tid;		/* where this version of the row lies */
} FlytOutboxRow;

/* The columns a scan reads (outbox_scan.c). */
#define FLYT_OUTBOX_SCAN_COLUMNS 8

/* Says whether the row with this id is to be passed over unread. */
typedef bool (*FlytOutboxSkip) (int64 id, void *arg);

typedef struct FlytOutboxScan
{
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	MemoryContext row_context;	/* what a row points to, reset per row */
	AttrNumber	attnums[FLYT_OUTBOX_SCAN_COLUMNS];
	int64		last_id;		/* the id of the last row returned or passed
								 * over (entries the snapshot does not see
								 * leave it) */
} FlytOutboxScan;

extern void flyt_outbox_scan_begin(FlytOutboxScan *scan, Snapshot snapshot, int64 after);
extern bool flyt_outbox_scan_next(FlytOutboxScan *scan, FlytOutboxSkip skip, void *arg,
								  FlytOutboxRow *row);
extern void flyt_outbox_scan_read_row(FlytOutboxScan *scan, FlytOutboxRow *row);
extern void flyt_outbox_scan_end(FlytOutboxScan *scan);
extern int	flyt_outbox_delete_found(int64 *ids, const ItemPointerData *tids, int n);

#endif							/* FLYT_OUTBOX_SCAN_H */
