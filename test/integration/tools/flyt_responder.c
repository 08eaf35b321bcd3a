/*
 * flyt_responder.c — a stand-in for fint-flyt-history-service's answer to
 * the flow-headers request-reply (INTEROP.md 2.3), for the integration
 * tests.  Built by the test scripts into their scratch directory.
 *
 *   flyt_responder -b BROKERS -t REQUEST_TOPIC -f ANSWERS [-g GROUP]
 *
 * ANSWERS has one line per instance it knows: "ID<TAB>JSON", JSON being
 * the InstanceFlowHeaders to answer with, or the word null for a null
 * reply (history-service has no instance-registered event of it).  An id
 * it does not list gets no answer at all (the requester times out).  The
 * file is read again whenever it changes.
 *
 * Each request is answered as history-service does: to the topic named by
 * its kafka_replyTopic header, key = the request's key, value = the JSON
 * or null, headers kafka_correlationId (copied byte for byte),
 * origin.application.id = fint-flyt-history-service and, with a value,
 * __TypeId__ = no.novari.flyt.kafka.instanceflow.headers.InstanceFlowHeaders.
 * And each request is printed on stdout as one JSON line, so that the test
 * can check the request's wire format:
 *   {"value":"42","key":null,"replyTopic":"...","correlationIdBytes":16,
 *    "correlationIdHex":"...","origin":"...","typeId":"...","headers":[names]}
 *
 * Reads the request topic from the beginning with a group of its own
 * (default: flyt-responder-<pid>); runs until SIGTERM or SIGINT.
 */
#define _GNU_SOURCE
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void) sig;
	stop = 1;
}

typedef struct Answer
{
	long long	id;
	char	   *json;			/* NULL: answer null */
} Answer;

static Answer *answers;
static int	nanswers;
static const char *answers_path;
static time_t answers_mtime;
static off_t answers_size;

static void load_answers(void)
{
	struct stat st;
	FILE	   *f;
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		len;

	if (stat(answers_path, &st) != 0 ||
		(st.st_mtime == answers_mtime && st.st_size == answers_size && answers != NULL))
		return;
	f = fopen(answers_path, "r");
	if (f == NULL)
		return;
	for (int i = 0; i < nanswers; i++)
		free(answers[i].json);
	free(answers);
	answers = NULL;
	nanswers = 0;
	while ((len = getline(&line, &cap, f)) > 0)
	{
		char	   *tab = strchr(line, '\t');

		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (tab == NULL)
			continue;
		*tab = '\0';
		answers = realloc(answers, sizeof(Answer) * (nanswers + 1));
		answers[nanswers].id = atoll(line);
		answers[nanswers].json = strcmp(tab + 1, "null") == 0 ? NULL : strdup(tab + 1);
		nanswers++;
	}
	free(line);
	fclose(f);
	answers_mtime = st.st_mtime;
	answers_size = st.st_size;
}

static const Answer *find_answer(long long id)
{
	load_answers();
	for (int i = 0; i < nanswers; i++)
		if (answers[i].id == id)
			return &answers[i];
	return NULL;
}

/* Prints s as a JSON string (the header values are short ASCII). */
static void json_string(FILE *out, const char *s, size_t len)
{
	fputc('"', out);
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void print_header(FILE *out, rd_kafka_headers_t *h, const char *name, const char *field)
{
	const void *v;
	size_t		size;

	fprintf(out, ",\"%s\":", field);
	if (h != NULL && rd_kafka_header_get_last(h, name, &v, &size) == RD_KAFKA_RESP_ERR_NO_ERROR && v != NULL)
		json_string(out, v, size);
	else
		fputs("null", out);
}

/* Assigns what the group gives and says so on stderr (the test waits for it). */
static void rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
					  rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
	(void) opaque;
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
	{
		rd_kafka_assign(rk, partitions);
		fprintf(stderr, "flyt_responder: assigned %d partition(s)\n", partitions->cnt);
	}
	else
		rd_kafka_assign(rk, NULL);
}

static void handle(rd_kafka_t *producer, rd_kafka_message_t *m)
{
	rd_kafka_headers_t *h = NULL;
	const void *reply_topic = NULL;
	const void *corr = NULL;
	size_t		reply_topic_len = 0;
	size_t		corr_len = 0;
	char		value[64];
	char		topic[512];
	const Answer *answer;
	rd_kafka_headers_t *rh;
	const char *name;
	const void *v;
	size_t		size;

	(void) rd_kafka_message_headers(m, &h);
	if (h != NULL)
	{
		(void) rd_kafka_header_get_last(h, "kafka_replyTopic", &reply_topic, &reply_topic_len);
		(void) rd_kafka_header_get_last(h, "kafka_correlationId", &corr, &corr_len);
	}
	snprintf(value, sizeof(value), "%.*s", (int) (m->len < 60 ? m->len : 60),
			 m->payload ? (const char *) m->payload : "");

	/* the request, for the test */
	printf("{\"value\":");
	json_string(stdout, value, strlen(value));
	printf(",\"key\":");
	if (m->key == NULL)
		printf("null");
	else
		json_string(stdout, m->key, m->key_len);
	printf(",\"replyTopic\":");
	if (reply_topic)
		json_string(stdout, reply_topic, reply_topic_len);
	else
		printf("null");
	printf(",\"correlationIdBytes\":%zu,\"correlationIdHex\":\"", corr ? corr_len : 0);
	for (size_t i = 0; corr && i < corr_len; i++)
		printf("%02x", ((const unsigned char *) corr)[i]);
	printf("\"");
	print_header(stdout, h, "origin.application.id", "origin");
	print_header(stdout, h, "__TypeId__", "typeId");
	printf(",\"headers\":[");
	for (size_t i = 0; h && rd_kafka_header_get_all(h, i, &name, &v, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
	{
		if (i > 0)
			printf(",");
		json_string(stdout, name, strlen(name));
	}
	printf("]}\n");
	fflush(stdout);

	if (reply_topic == NULL || corr == NULL || m->payload == NULL)
		return;
	answer = find_answer(atoll(value));
	if (answer == NULL)
		return;					/* no answer: the requester times out */

	snprintf(topic, sizeof(topic), "%.*s", (int) reply_topic_len, (const char *) reply_topic);
	rh = rd_kafka_headers_new(3);
	rd_kafka_header_add(rh, "kafka_correlationId", -1, corr, corr_len);
	rd_kafka_header_add(rh, "origin.application.id", -1, "fint-flyt-history-service", -1);
	if (answer->json != NULL)
		rd_kafka_header_add(rh, "__TypeId__", -1,
							"no.novari.flyt.kafka.instanceflow.headers.InstanceFlowHeaders", -1);
	if (rd_kafka_producev(producer,
						  RD_KAFKA_V_TOPIC(topic),
						  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
						  RD_KAFKA_V_KEY(m->key, m->key_len),
						  RD_KAFKA_V_VALUE(answer->json, answer->json ? strlen(answer->json) : 0),
						  RD_KAFKA_V_HEADERS(rh),
						  RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		rd_kafka_headers_destroy(rh);
		fprintf(stderr, "flyt_responder: could not produce the reply\n");
	}
}

int main(int argc, char **argv)
{
	const char *brokers = NULL, *topic = NULL, *group = NULL;
	char		errstr[512];
	char		default_group[64];
	rd_kafka_conf_t *conf;
	rd_kafka_t *consumer;
	rd_kafka_t *producer;
	rd_kafka_topic_partition_list_t *topics;
	int			opt;

	while ((opt = getopt(argc, argv, "b:t:f:g:")) != -1)
	{
		switch (opt)
		{
			case 'b': brokers = optarg; break;
			case 't': topic = optarg; break;
			case 'f': answers_path = optarg; break;
			case 'g': group = optarg; break;
			default:
				fprintf(stderr, "usage: flyt_responder -b BROKERS -t REQUEST_TOPIC -f ANSWERS [-g GROUP]\n");
				return 2;
		}
	}
	if (brokers == NULL || topic == NULL || answers_path == NULL)
	{
		fprintf(stderr, "usage: flyt_responder -b BROKERS -t REQUEST_TOPIC -f ANSWERS [-g GROUP]\n");
		return 2;
	}
	if (group == NULL)
	{
		snprintf(default_group, sizeof(default_group), "flyt-responder-%d", (int) getpid());
		group = default_group;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "linger.ms", "0", errstr, sizeof(errstr)))
	{
		fprintf(stderr, "flyt_responder: %s\n", errstr);
		return 1;
	}
	producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (producer == NULL)
	{
		fprintf(stderr, "flyt_responder: %s\n", errstr);
		return 1;
	}

	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr)) ||
		rd_kafka_conf_set(conf, "topic.metadata.refresh.interval.ms", "1000", errstr, sizeof(errstr)))
	{
		fprintf(stderr, "flyt_responder: %s\n", errstr);
		return 1;
	}
	rd_kafka_conf_set_rebalance_cb(conf, rebalance);
	consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (consumer == NULL)
	{
		fprintf(stderr, "flyt_responder: %s\n", errstr);
		return 1;
	}
	rd_kafka_poll_set_consumer(consumer);
	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
	if (rd_kafka_subscribe(consumer, topics) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		fprintf(stderr, "flyt_responder: could not subscribe\n");
		return 1;
	}
	rd_kafka_topic_partition_list_destroy(topics);
	fprintf(stderr, "flyt_responder: answering %s\n", topic);

	while (!stop)
	{
		rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);

		rd_kafka_poll(producer, 0);
		if (m == NULL)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
			handle(producer, m);
		else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
			fprintf(stderr, "flyt_responder: %s\n", rd_kafka_message_errstr(m));
		rd_kafka_message_destroy(m);
	}
	rd_kafka_flush(producer, 5000);
	rd_kafka_consumer_close(consumer);
	rd_kafka_destroy(consumer);
	rd_kafka_destroy(producer);
	return 0;
}
