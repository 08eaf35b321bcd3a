/*-------------------------------------------------------------------------
 *
 * flyt_broker.c
 *	  Embedded Kafka-protocol broker for testing flyt_instance, built on
 *	  librdkafka's mock cluster.
 *
 * Usage:
 *	  flyt_broker [--brokers N] [--port P] [--topic NAME]...
 *				  [--topics-for ORG_ID [--context CTX]]
 *
 * The mock cluster auto-creates unknown topics with four partitions and does
 * not implement the admin API, so the topics the tests use are created here,
 * up front, with one partition and replication factor 1.
 *
 * Once the cluster is ready the program prints "bootstrap=HOST:PORT[,...]"
 * (a valid bootstrap.servers value) as its first line on stdout, then serves
 * one command per line on stdin, answering each with a line starting with
 * "ok" or "error":
 *
 *	  down [BROKER_ID]			  disconnect a broker (all when no id) and
 *								  refuse new connections
 *	  up [BROKER_ID]			  accept connections again
 *	  rtt MS [BROKER_ID]		  delay every answer of a broker (all when no
 *								  id) by MS milliseconds; 0 for none
 *	  topic NAME [PARTITIONS]	  create a topic (1 partition by default)
 *	  quit						  shut down
 *
 * Blank lines are ignored.  End of input, SIGTERM and SIGINT shut down
 * cleanly too.  librdkafka's own log lines go to stderr.
 *
 * Exit status: 0 after a clean shutdown, 1 when the cluster could not be set
 * up or stdin/stdout failed, 2 on a usage error.
 *
 * librdkafka (2.0.2 at least) has no way to choose the mock brokers' ports:
 * each listener is bound to 127.0.0.1 port 0.  --port is implemented by
 * interposing bind() for the duration of rd_kafka_mock_cluster_new(); see
 * flyt_bind().  Linux/glibc only, as is signalfd.
 *
 * IDENTIFICATION
 *	  broker/flyt_broker.c
 *
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* RTLD_NEXT */
#endif

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define PROGNAME			"flyt_broker"
#define DEFAULT_CONTEXT		"flyt"
#define MAX_BROKERS			16
#define MAX_PARTITIONS		1000
#define MAX_TOPIC_LEN		249		/* Kafka's own limit */
#define MAX_LINE			1024

/* Exit codes. */
#define EXIT_OK				0
#define EXIT_RUNTIME		1
#define EXIT_USAGE			2

/* The flyt event topics, {org}.{ctx}.event.{name}. */
static const char *const flyt_event_topics[] = {
	"instance-received",
	"instance-dispatched",
	"instance-registered",
	"instance-requested-for-retry",
	"instance-deleted",
};

/* The flyt error event topics, {org}.{ctx}.event.error.{name}. */
static const char *const flyt_error_topics[] = {
	"instance-registration-error",
	"instance-retry-request-error",
	"instance-error",			/* flyt_instance.error_event_format = instance-error */
};

/*
 * The flow-headers request-reply with fint-flyt-history-service: the
 * request topic history-service creates, and the reply topic of the default
 * application id.
 */
static const char *const flyt_request_reply_topics[] = {
	"request.instance-flow-headers-for-registered-instance.by.instance-id",
	"reply.fint-flyt-instance-service.instance-flow-headers-for-registered-instance",
};

#define lengthof(array) (sizeof(array) / sizeof((array)[0]))

/* A list of topic names to create at start, without duplicates. */
typedef struct TopicList
{
	char	  **names;
	int			count;
	int			capacity;
} TopicList;

/* Buffered reading of stdin, one command line at a time. */
typedef struct LineReader
{
	char		buf[MAX_LINE + 1];
	size_t		len;
	bool		overlong;		/* discarding the rest of a too-long line */
	bool		eof;
} LineReader;

/* What the command loop should do next. */
typedef enum LoopResult
{
	LOOP_CONTINUE,
	LOOP_QUIT,
	LOOP_FAIL
} LoopResult;

typedef int (*bind_function) (int, const struct sockaddr *, socklen_t);

/*
 * Fixed-port state for flyt_bind(), guarded by fixed_port_lock.  While
 * fixed_port_next is non-zero, loopback binds to port 0 get that port
 * instead, counting up to fixed_port_end.
 */
static pthread_mutex_t fixed_port_lock = PTHREAD_MUTEX_INITIALIZER;
static int	fixed_port_next = 0;
static int	fixed_port_end = 0;
static int	fixed_port_errno = 0;

static rd_kafka_mock_cluster_t *mcluster = NULL;
static int	broker_count = 1;

static void report_error(const char *fmt,...)
			__attribute__((format(printf, 1, 2)));
static void usage_error(const char *fmt,...)
			__attribute__((format(printf, 1, 2), noreturn));
static bool say(const char *fmt,...)
			__attribute__((format(printf, 1, 2)));

/*
 * Our definition of the bind() symbol.  It is exported from the executable,
 * so it takes precedence over libc's for librdkafka too.  The C name differs
 * so that it does not clash with the prototype in <sys/socket.h>.
 */
int			flyt_bind(int fd, const struct sockaddr *addr, socklen_t len)
			__asm__("bind");

/*
 * bind() as librdkafka sees it: while a fixed port is requested, gives the
 * mock broker listener (a loopback bind to port 0) that port instead of a
 * random one; otherwise hands over to libc's bind().
 */
int
flyt_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	static bind_function real_bind = NULL;
	struct sockaddr_in sin;
	int			port = 0;
	int			rc;

	if (real_bind == NULL)
	{
		real_bind = (bind_function) dlsym(RTLD_NEXT, "bind");
		if (real_bind == NULL)
		{
			errno = ENOSYS;
			return -1;
		}
	}

	if (addr == NULL || len < (socklen_t) sizeof(sin) ||
		addr->sa_family != AF_INET)
		return real_bind(fd, addr, len);

	memcpy(&sin, addr, sizeof(sin));
	if (sin.sin_port != 0 || sin.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
		return real_bind(fd, addr, len);

	pthread_mutex_lock(&fixed_port_lock);
	if (fixed_port_next != 0 && fixed_port_next <= fixed_port_end)
		port = fixed_port_next++;
	pthread_mutex_unlock(&fixed_port_lock);

	if (port == 0)
		return real_bind(fd, addr, len);

	sin.sin_port = htons((uint16_t) port);
	rc = real_bind(fd, (const struct sockaddr *) &sin, sizeof(sin));
	if (rc != 0)
	{
		pthread_mutex_lock(&fixed_port_lock);
		fixed_port_errno = errno;
		pthread_mutex_unlock(&fixed_port_lock);
	}
	return rc;
}

/*
 * Prints the usage text to the given stream.
 */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: %s [--brokers N] [--port P] [--topic NAME]...\n"
			"       %*s [--topics-for ORG_ID [--context CTX]]\n"
			"\n"
			"Runs a librdkafka mock Kafka cluster on 127.0.0.1.\n"
			"\n"
			"  --brokers N         number of brokers, 1..%d (default 1)\n"
			"  --port P            broker 1 listens on port P, broker i on P+i-1\n"
			"                      (default: random ports)\n"
			"  --topic NAME        create topic NAME with one partition\n"
			"  --topics-for ORG_ID create the flyt topics of that organisation\n"
			"  --context CTX       domain context of those topics (default %s)\n"
			"\n"
			"Prints \"bootstrap=HOST:PORT[,...]\" when ready, then reads commands\n"
			"from stdin: down [ID], up [ID], rtt MS [ID], topic NAME [PARTITIONS], quit.\n",
			PROGNAME, (int) strlen(PROGNAME), "", MAX_BROKERS,
			DEFAULT_CONTEXT);
}

/*
 * Reports a fatal problem on stderr.
 */
static void
report_error(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", PROGNAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * Reports a usage error and exits.
 */
static void
usage_error(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", PROGNAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"%s --help\" for more information.\n", PROGNAME);
	exit(EXIT_USAGE);
}

/*
 * Allocates memory or exits.
 */
static void *
xmalloc(size_t size)
{
	void	   *p = malloc(size);

	if (p == NULL)
	{
		report_error("out of memory");
		exit(EXIT_RUNTIME);
	}
	return p;
}

/*
 * Parses a whole decimal integer within [min, max]; false if it is not one.
 */
static bool
parse_int(const char *s, long min, long max, long *result)
{
	char	   *end;
	long		v;

	if (s == NULL || !isdigit((unsigned char) *s))
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*result = v;
	return true;
}

/*
 * Checks a topic name against Kafka's rules; returns NULL when it is legal,
 * else why it is not.
 */
static const char *
topic_name_problem(const char *name)
{
	size_t		len = strlen(name);
	const char *p;

	if (len == 0)
		return "topic name is empty";
	if (len > MAX_TOPIC_LEN)
		return "topic name is longer than 249 characters";
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return "topic name cannot be \".\" or \"..\"";
	for (p = name; *p; p++)
	{
		if (!isalnum((unsigned char) *p) && *p != '.' && *p != '_' &&
			*p != '-')
			return "topic name may only contain ASCII letters, digits, '.', '_' and '-'";
	}
	return NULL;
}

/*
 * Adds a copy of a topic name to the list unless it is already there.
 */
static void
topic_list_add(TopicList *list, const char *name)
{
	int			i;
	const char *problem;

	if ((problem = topic_name_problem(name)) != NULL)
		usage_error("invalid topic \"%s\": %s", name, problem);

	for (i = 0; i < list->count; i++)
	{
		if (strcmp(list->names[i], name) == 0)
			return;
	}

	if (list->count == list->capacity)
	{
		int			capacity = list->capacity ? list->capacity * 2 : 16;
		char	  **names = xmalloc(sizeof(char *) * (size_t) capacity);

		if (list->count > 0)
			memcpy(names, list->names, sizeof(char *) * (size_t) list->count);
		free(list->names);
		list->names = names;
		list->capacity = capacity;
	}
	list->names[list->count] = xmalloc(strlen(name) + 1);
	strcpy(list->names[list->count], name);
	list->count++;
}

/*
 * Adds the flyt topics of an organisation and domain context to the list.
 */
static void
topic_list_add_flyt(TopicList *list, const char *org_id, const char *context)
{
	char		org[MAX_TOPIC_LEN + 1];
	char		name[MAX_TOPIC_LEN + 2];
	size_t		i;

	if (strlen(org_id) == 0)
		usage_error("--topics-for needs a non-empty organisation id");
	if (strlen(context) == 0)
		usage_error("--context needs a non-empty domain context");
	if (strlen(org_id) > MAX_TOPIC_LEN)
		usage_error("organisation id \"%s\" is too long", org_id);

	/* {org} is the organisation id with dots replaced by dashes. */
	for (i = 0; org_id[i] != '\0'; i++)
		org[i] = org_id[i] == '.' ? '-' : org_id[i];
	org[i] = '\0';

	for (i = 0; i < lengthof(flyt_event_topics); i++)
	{
		if (snprintf(name, sizeof(name), "%s.%s.event.%s",
					 org, context, flyt_event_topics[i]) >= (int) sizeof(name))
			usage_error("topic names for \"%s\" would be too long", org_id);
		topic_list_add(list, name);
	}
	for (i = 0; i < lengthof(flyt_error_topics); i++)
	{
		if (snprintf(name, sizeof(name), "%s.%s.event.error.%s",
					 org, context, flyt_error_topics[i]) >= (int) sizeof(name))
			usage_error("topic names for \"%s\" would be too long", org_id);
		topic_list_add(list, name);
	}
	for (i = 0; i < lengthof(flyt_request_reply_topics); i++)
	{
		if (snprintf(name, sizeof(name), "%s.%s.%s",
					 org, context, flyt_request_reply_topics[i]) >= (int) sizeof(name))
			usage_error("topic names for \"%s\" would be too long", org_id);
		topic_list_add(list, name);
	}
}

/*
 * Reads the command line options into the given variables; exits on error.
 */
static void
parse_options(int argc, char **argv, int *port, TopicList *topics)
{
	static const struct option long_options[] = {
		{"brokers", required_argument, NULL, 'b'},
		{"port", required_argument, NULL, 'p'},
		{"topic", required_argument, NULL, 't'},
		{"topics-for", required_argument, NULL, 'o'},
		{"context", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *org_id = NULL;
	const char *context = NULL;
	long		value;
	int			c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'b':
				if (!parse_int(optarg, 1, MAX_BROKERS, &value))
					usage_error("--brokers must be a number from 1 to %d, not \"%s\"",
								MAX_BROKERS, optarg);
				broker_count = (int) value;
				break;
			case 'p':
				if (!parse_int(optarg, 1, 65535, &value))
					usage_error("--port must be a number from 1 to 65535, not \"%s\"",
								optarg);
				*port = (int) value;
				break;
			case 't':
				topic_list_add(topics, optarg);
				break;
			case 'o':
				if (org_id != NULL)
					usage_error("--topics-for may be given only once");
				org_id = optarg;
				break;
			case 'c':
				if (context != NULL)
					usage_error("--context may be given only once");
				context = optarg;
				break;
			case 'h':
				usage(stdout);
				exit(EXIT_OK);
			case ':':
				usage_error("option \"%s\" needs a value", argv[optind - 1]);
			default:
				usage_error("unknown option \"%s\"", argv[optind - 1]);
		}
	}

	if (optind < argc)
		usage_error("unexpected argument \"%s\"", argv[optind]);
	if (context != NULL && org_id == NULL)
		usage_error("--context is only meaningful with --topics-for");
	if (*port != 0 && *port + broker_count - 1 > 65535)
		usage_error("ports %d to %d do not all exist",
					*port, *port + broker_count - 1);

	if (org_id != NULL)
		topic_list_add_flyt(topics, org_id,
							context != NULL ? context : DEFAULT_CONTEXT);
}

/*
 * Checks that the fixed ports can be listened on, the way the mock broker
 * will; reports the problem and returns false if not.  librdkafka 2.0.2
 * aborts (assertion failure) when a mock broker cannot bind, so this must
 * be found out beforehand.
 */
static bool
fixed_ports_available(int port)
{
	int			p;

	for (p = port; p < port + broker_count; p++)
	{
		struct sockaddr_in sin;
		int			fd;
		int			on = 1;
		int			rc;

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin.sin_port = htons((uint16_t) p);

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
		if (fd < 0)
		{
			report_error("could not create a socket: %s", strerror(errno));
			return false;
		}
		rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (rc == 0)
			rc = bind(fd, (const struct sockaddr *) &sin, sizeof(sin));
		if (rc == 0)
			rc = listen(fd, 1);
		if (rc != 0)
		{
			report_error("could not listen on 127.0.0.1:%d: %s",
						 p, strerror(errno));
			close(fd);
			return false;
		}
		close(fd);
	}
	return true;
}

/*
 * Writes librdkafka's log lines to stderr like its default logger, except
 * for the warning that the hosting handle has no bootstrap.servers: it
 * never connects anywhere, so that is expected.
 */
static void
log_to_stderr(const rd_kafka_t *rk, int level, const char *fac,
			  const char *buf)
{
	struct timespec now;

	if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers") != NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	fprintf(stderr, "%%%d|%ld.%03ld|%s|%s| %s\n", level, (long) now.tv_sec,
			now.tv_nsec / 1000000, fac, rk ? rd_kafka_name(rk) : "", buf);
}

/*
 * Creates the mock cluster on a fresh producer handle, on fixed ports when
 * port is not 0.  Returns the handle, or NULL after reporting the problem.
 */
static rd_kafka_t *
start_cluster(int port)
{
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	char		errstr[512];
	int			bind_errno;

	if (port != 0 && !fixed_ports_available(port))
		return NULL;

	/* The handle only hosts the cluster; it never connects anywhere. */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "client.id", PROGNAME,
						  errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		report_error("could not configure librdkafka: %s", errstr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_log_cb(conf, log_to_stderr);

	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		report_error("could not create librdkafka handle: %s", errstr);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}

	pthread_mutex_lock(&fixed_port_lock);
	fixed_port_next = port;
	fixed_port_end = port + broker_count - 1;
	fixed_port_errno = 0;
	pthread_mutex_unlock(&fixed_port_lock);

	mcluster = rd_kafka_mock_cluster_new(rk, broker_count);

	pthread_mutex_lock(&fixed_port_lock);
	bind_errno = fixed_port_errno;
	fixed_port_next = 0;
	pthread_mutex_unlock(&fixed_port_lock);

	/* librdkafka 2.0.2 aborts instead when a listener cannot bind. */
	if (mcluster == NULL)
	{
		if (bind_errno != 0)
			report_error("could not listen on 127.0.0.1 ports %d to %d: %s",
						 port, port + broker_count - 1, strerror(bind_errno));
		else
			report_error("could not create the mock cluster (see the librdkafka log above)");
		rd_kafka_destroy(rk);
		return NULL;
	}
	return rk;
}

/*
 * Creates one topic in the mock cluster; returns the librdkafka error code.
 */
static rd_kafka_resp_err_t
create_topic(const char *name, int partitions)
{
	return rd_kafka_mock_topic_create(mcluster, name, partitions, 1);
}

/*
 * Prints one line on stdout and flushes it; false when stdout failed.
 */
static bool
say(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	if (fflush(stdout) != 0 || ferror(stdout))
	{
		report_error("could not write to stdout: %s", strerror(errno));
		return false;
	}
	return true;
}

/*
 * Runs the "down" and "up" commands.
 */
static LoopResult
command_updown(bool up, const char *arg, const char *extra)
{
	const char *verb = up ? "up" : "down";
	rd_kafka_resp_err_t err;
	long		id = -1;

	if (extra != NULL)
		return say("error usage: %s [BROKER_ID]", verb) ? LOOP_CONTINUE : LOOP_FAIL;
	if (arg != NULL && !parse_int(arg, 1, broker_count, &id))
		return say("error %s: no broker \"%s\", broker ids are 1 to %d",
				   verb, arg, broker_count) ? LOOP_CONTINUE : LOOP_FAIL;

	if (up)
		err = rd_kafka_mock_broker_set_up(mcluster, (int32_t) id);
	else
		err = rd_kafka_mock_broker_set_down(mcluster, (int32_t) id);

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		if (!say("error %s: %s", verb, rd_kafka_err2str(err)))
			return LOOP_FAIL;
	}
	else if (id == -1)
	{
		if (!say("ok %s all", verb))
			return LOOP_FAIL;
	}
	else if (!say("ok %s %ld", verb, id))
		return LOOP_FAIL;
	return LOOP_CONTINUE;
}

/*
 * Runs the "rtt" command.
 */
static LoopResult
command_rtt(const char *ms, const char *arg, const char *extra)
{
	rd_kafka_resp_err_t err;
	long		rtt;
	long		id = -1;

	if (ms == NULL || extra != NULL)
		return say("error usage: rtt MS [BROKER_ID]") ? LOOP_CONTINUE : LOOP_FAIL;
	if (!parse_int(ms, 0, 3600 * 1000, &rtt))
		return say("error rtt: \"%s\" is not a number of milliseconds from 0 to 3600000",
				   ms) ? LOOP_CONTINUE : LOOP_FAIL;
	if (arg != NULL && !parse_int(arg, 1, broker_count, &id))
		return say("error rtt: no broker \"%s\", broker ids are 1 to %d",
				   arg, broker_count) ? LOOP_CONTINUE : LOOP_FAIL;

	err = rd_kafka_mock_broker_set_rtt(mcluster, (int32_t) id, (int) rtt);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		return say("error rtt: %s", rd_kafka_err2str(err)) ? LOOP_CONTINUE : LOOP_FAIL;
	if (id == -1)
		return say("ok rtt %ld all", rtt) ? LOOP_CONTINUE : LOOP_FAIL;
	return say("ok rtt %ld %ld", rtt, id) ? LOOP_CONTINUE : LOOP_FAIL;
}

/*
 * Runs the "topic" command.
 */
static LoopResult
command_topic(const char *name, const char *count, const char *extra)
{
	const char *problem;
	rd_kafka_resp_err_t err;
	long		partitions = 1;

	if (name == NULL || extra != NULL)
		return say("error usage: topic NAME [PARTITIONS]") ? LOOP_CONTINUE : LOOP_FAIL;
	if ((problem = topic_name_problem(name)) != NULL)
		return say("error topic: %s", problem) ? LOOP_CONTINUE : LOOP_FAIL;
	if (count != NULL && !parse_int(count, 1, MAX_PARTITIONS, &partitions))
		return say("error topic: partitions must be a number from 1 to %d",
				   MAX_PARTITIONS) ? LOOP_CONTINUE : LOOP_FAIL;

	err = create_topic(name, (int) partitions);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		return say("error topic %s: %s", name, rd_kafka_err2str(err)) ?
			LOOP_CONTINUE : LOOP_FAIL;
	return say("ok topic %s %ld", name, partitions) ? LOOP_CONTINUE : LOOP_FAIL;
}

/*
 * Runs one command line.
 */
static LoopResult
run_command(char *line)
{
	char	   *words[4];
	int			nwords = 0;
	char	   *save = NULL;
	char	   *word;

	for (word = strtok_r(line, " \t\r", &save);
		 word != NULL && nwords < (int) lengthof(words);
		 word = strtok_r(NULL, " \t\r", &save))
		words[nwords++] = word;
	while (nwords < (int) lengthof(words))
		words[nwords++] = NULL;

	if (words[0] == NULL)
		return LOOP_CONTINUE;	/* blank line */

	if (strcmp(words[0], "down") == 0 || strcmp(words[0], "up") == 0)
		return command_updown(words[0][0] == 'u', words[1], words[2]);
	if (strcmp(words[0], "rtt") == 0)
		return command_rtt(words[1], words[2], words[3]);
	if (strcmp(words[0], "topic") == 0)
		return command_topic(words[1], words[2], words[3]);
	if (strcmp(words[0], "quit") == 0)
	{
		if (words[1] != NULL)
			return say("error usage: quit") ? LOOP_CONTINUE : LOOP_FAIL;
		return say("ok quit") ? LOOP_QUIT : LOOP_FAIL;
	}
	return say("error unknown command \"%s\" (commands: down, up, rtt, topic, quit)",
			   words[0]) ? LOOP_CONTINUE : LOOP_FAIL;
}

/*
 * Reads what stdin has to offer and runs each complete line; at end of
 * input runs a last unterminated line, then reports LOOP_QUIT.
 */
static LoopResult
serve_stdin(LineReader *reader)
{
	ssize_t		n;
	char	   *nl;

	n = read(STDIN_FILENO, reader->buf + reader->len,
			 MAX_LINE - reader->len);
	if (n < 0)
	{
		if (errno == EINTR || errno == EAGAIN)
			return LOOP_CONTINUE;
		report_error("could not read stdin: %s", strerror(errno));
		return LOOP_FAIL;
	}
	if (n == 0)
		reader->eof = true;
	reader->len += (size_t) n;
	reader->buf[reader->len] = '\0';

	while ((nl = memchr(reader->buf, '\n', reader->len)) != NULL)
	{
		size_t		used = (size_t) (nl - reader->buf) + 1;
		LoopResult	result = LOOP_CONTINUE;

		*nl = '\0';
		if (reader->overlong)
			reader->overlong = false;	/* tail of a line already refused */
		else
			result = run_command(reader->buf);

		reader->len -= used;
		memmove(reader->buf, reader->buf + used, reader->len);
		reader->buf[reader->len] = '\0';
		if (result != LOOP_CONTINUE)
			return result;
	}

	if (reader->len == MAX_LINE)
	{
		/* Refuse the line once, then skip the rest of it. */
		if (!reader->overlong &&
			!say("error command longer than %d bytes", MAX_LINE - 1))
			return LOOP_FAIL;
		reader->overlong = true;
		reader->len = 0;
	}

	if (reader->eof)
	{
		if (reader->len > 0 && !reader->overlong)
		{
			LoopResult	result = run_command(reader->buf);

			if (result != LOOP_CONTINUE)
				return result;
		}
		return LOOP_QUIT;
	}
	return LOOP_CONTINUE;
}

/*
 * Serves commands from stdin until quit, end of input or a termination
 * signal; sleeps in poll() in between.
 */
static LoopResult
command_loop(int sigfd)
{
	LineReader	reader;
	struct pollfd fds[2];

	memset(&reader, 0, sizeof(reader));
	fds[0].fd = STDIN_FILENO;
	fds[0].events = POLLIN;
	fds[1].fd = sigfd;
	fds[1].events = POLLIN;

	for (;;)
	{
		LoopResult	result;

		fds[0].revents = fds[1].revents = 0;
		if (poll(fds, 2, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			report_error("poll failed: %s", strerror(errno));
			return LOOP_FAIL;
		}

		if (fds[1].revents & POLLIN)
		{
			struct signalfd_siginfo info;

			if (read(sigfd, &info, sizeof(info)) == (ssize_t) sizeof(info))
				fprintf(stderr, "%s: received %s, shutting down\n",
						PROGNAME, strsignal((int) info.ssi_signo));
			return LOOP_QUIT;
		}

		/* POLLHUP/POLLERR without data: read() reports EOF or the error. */
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
		{
			result = serve_stdin(&reader);
			if (result != LOOP_CONTINUE)
				return result;
		}
		else if (fds[0].revents & POLLNVAL)
		{
			report_error("stdin is not open");
			return LOOP_FAIL;
		}
	}
}

int
main(int argc, char **argv)
{
	TopicList	topics = {NULL, 0, 0};
	int			port = 0;
	sigset_t	sigs;
	int			sigfd;
	rd_kafka_t *rk;
	LoopResult	result;
	int			i;

	parse_options(argc, argv, &port, &topics);

	/*
	 * Termination signals are served by the command loop through a signalfd.
	 * Block them before librdkafka starts its threads, which inherit the mask.
	 * A vanished reader of stdout shows up as a write error, not SIGPIPE.
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) != 0 ||
		(sigfd = signalfd(-1, &sigs, SFD_CLOEXEC)) < 0)
	{
		report_error("could not set up signal handling: %s", strerror(errno));
		return EXIT_RUNTIME;
	}
	signal(SIGPIPE, SIG_IGN);

	rk = start_cluster(port);
	if (rk == NULL)
		return EXIT_RUNTIME;

	result = LOOP_CONTINUE;
	for (i = 0; i < topics.count; i++)
	{
		rd_kafka_resp_err_t err = create_topic(topics.names[i], 1);

		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			report_error("could not create topic \"%s\": %s",
						 topics.names[i], rd_kafka_err2str(err));
			result = LOOP_FAIL;
			break;
		}
	}

	if (result == LOOP_CONTINUE)
	{
		if (say("bootstrap=%s", rd_kafka_mock_cluster_bootstraps(mcluster)))
			result = command_loop(sigfd);
		else
			result = LOOP_FAIL;
	}

	rd_kafka_mock_cluster_destroy(mcluster);
	rd_kafka_destroy(rk);
	close(sigfd);
	for (i = 0; i < topics.count; i++)
		free(topics.names[i]);
	free(topics.names);

	return result == LOOP_QUIT ? EXIT_OK : EXIT_RUNTIME;
}
