/*-------------------------------------------------------------------------
 *
 * import.h
 *	  flyt_import_legacy: the instances of the Java fint-flyt-instance-service
 *	  imported from its three tables (INTEROP.md section 1).
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_IMPORT_H
#define FLYT_IMPORT_H

#include "postgres.h"

/* The Java service's tables and sequence, in the source schema. */
#define FLYT_LEGACY_OBJECT "instance_object"
#define FLYT_LEGACY_COLLECTION "instance_object_collection"
#define FLYT_LEGACY_VALUE "instance_object_value_per_key"
#define FLYT_LEGACY_SEQUENCE "instance_object_id_seq"

/*
 * Why a root or a row of the source was not imported
 * (flyt.import_skipped.reason).
 */
#define FLYT_SKIP_ID_IN_USE "id_in_use"
#define FLYT_SKIP_NO_CREATED_AT "no_created_at"
#define FLYT_SKIP_COLLECTION_WITHOUT_KEY "collection_without_key"
#define FLYT_SKIP_DUPLICATE_COLLECTION_KEY "duplicate_collection_key"
#define FLYT_SKIP_VALUE_WITHOUT_KEY "value_without_key"
#define FLYT_SKIP_TOO_DEEP "too_deep"
#define FLYT_SKIP_TOO_LARGE "too_large"
#define FLYT_SKIP_ORPHAN_OBJECT "orphan_object"
#define FLYT_SKIP_ORPHAN_COLLECTION "orphan_collection"
#define FLYT_SKIP_ORPHAN_VALUE "orphan_value"

/* Largest batch_size accepted. */
#define FLYT_IMPORT_MAX_BATCH 100000

#endif							/* FLYT_IMPORT_H */
