/*-------------------------------------------------------------------------
 *
 * log_privacy.c
 *	  Keeping the Kafka secrets out of the server log.
 *
 * flyt_instance.kafka_config may hold passwords (sasl.password,
 * ssl.key.password).  When a statement that sets it fails (a property
 * librdkafka rejects, SET of a setting no session may change, a role
 * without the privilege), PostgreSQL writes the failing statement, password
 * included, to the log under log_min_error_statement (ERROR by default);
 * with log_statement or log_min_duration_statement it writes the statement
 * even when it succeeds; a reload logs the new value.  An emit_log_hook
 * catches all three: a report made
 * while running a statement that names kafka_config loses its STATEMENT
 * line, a report that is itself the statement's text is replaced by a
 * note saying what was left out, and so is the reload's "parameter changed
 * to" line.  The messages of the check hook never
 * quote the value in the first place.
 *
 * This covers every way into the server log from a backend that has the
 * library loaded (always, with shared_preload_libraries).  It cannot cover
 * what ALTER SYSTEM writes to postgresql.auto.conf: the README says to put
 * secrets into a file included by postgresql.conf instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "log_privacy.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/* Does the text name the setting (any case, any quoting)? */
static bool
names_kafka_config(const char *text)
{
	static const char needle[] = "kafka_config";

	if (text == NULL)
		return false;
	for (const char *p = text; *p != '\0'; p++)
		if (pg_strncasecmp(p, needle, sizeof(needle) - 1) == 0)
			return true;
	return false;
}


static void
hide_secrets(ErrorData *edata)
{
	const char *id = edata->message_id;	/* untranslated: any lc_messages */

	if (!edata->output_to_server)
		goto next;

	/* a reload of postgresql.conf (in the postmaster and every process) */
	if (id != NULL && strcmp(id, "parameter \"%s\" changed to \"%s\"") == 0 &&
		names_kafka_config(edata->message))
		edata->message = pstrdup("parameter \"flyt_instance.kafka_config\" changed (the value is not logged: it may hold secrets)");

	if (names_kafka_config(debug_query_string))
	{
		/* the statement, the PL/pgSQL context quoting it, bound parameters */
		edata->hide_stmt = true;
		edata->hide_ctx = true;
		edata->internalquery = NULL;
		if (edata->detail != NULL && strncmp(edata->detail, "parameters: ", 12) == 0)
			edata->detail = NULL;
		edata->detail_log = NULL;
		if (id != NULL &&
			(strncmp(id, "statement: ", 11) == 0 || strncmp(id, "execute ", 8) == 0 ||
			 strncmp(id, "duration: ", 10) == 0))
			edata->message = pstrdup("statement: (left out: it names flyt_instance.kafka_config, which may hold secrets)");
	}
next:
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Installs the hook (every process that loads the library). */
void
flyt_log_privacy_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = hide_secrets;
}
