/*-------------------------------------------------------------------------
 *
 * idhash.h
 *	  A hash table keyed by int64 ids (instance ids, outbox ids), from
 *	  PostgreSQL's simplehash: idhash_create, idhash_insert, idhash_lookup,
 *	  idhash_delete_item, idhash_reset.
 *
 * Each including file gets its own static copy of the functions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_IDHASH_H
#define FLYT_IDHASH_H

#include "postgres.h"

#include "common/hashfn.h"
#include "datatype/timestamp.h"
#include "storage/itemptr.h"

typedef struct IdEntry
{
	int64		id;
	TimestampTz since;			/* what the user keeps with the id */
	uint32		tag;			/* likewise */
	uint32		size;			/* likewise */
	ItemPointerData tid;		/* likewise */
	char		status;			/* required by simplehash */
} IdEntry;

#define SH_PREFIX idhash
#define SH_ELEMENT_TYPE IdEntry
#define SH_KEY_TYPE int64
#define SH_KEY id
#define SH_HASH_KEY(tb, key) murmurhash32((uint32) (key) ^ (uint32) ((uint64) (key) >> 32))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

#endif							/* FLYT_IDHASH_H */
