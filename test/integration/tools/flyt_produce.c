/*
 * flyt_produce.c — the integration tests' load producer (built by
 * lib_crash.sh and lib.sh into the test's scratch directory).
 *
 * Reads lines "KEY<TAB>FLOW-HEADERS-JSON<TAB>VALUE" on stdin and produces
 * each to -t TOPIC with header flyt.instance-flow-headers (an empty KEY: no
 * key), at most -r messages per second (0: as fast as possible), with an
 * idempotent producer that retries for up to two minutes, so a broker
 * restart loses nothing.  Exit 0 when every message was acknowledged.
 *
 * An empty line is a checkpoint: every message read so far is flushed and
 * acknowledged (else exit 1), then "synced N" (messages delivered so far)
 * is written to stdout, so that a script feeding a long-lived producer
 * knows when what it fed is on the broker.
 */
#define _GNU_SOURCE
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long delivered, failed;

static void dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void) rk; (void) opaque;
	if (m->err) {
		if (failed++ < 5)
			fprintf(stderr, "flyt_produce: delivery failed: %s\n", rd_kafka_err2str(m->err));
	} else
		delivered++;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const char *brokers = NULL, *topic = NULL;
	double rate = 0, start;
	char err[512], *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long count = 0;
	int opt;
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;

	while ((opt = getopt(argc, argv, "b:t:r:")) != -1) {
		if (opt == 'b') brokers = optarg;
		else if (opt == 't') topic = optarg;
		else if (opt == 'r') rate = atof(optarg);
		else return 2;
	}
	if (!brokers || !topic) {
		fprintf(stderr, "usage: flyt_produce -b BROKERS -t TOPIC [-r RATE]\n");
		return 2;
	}
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) ||
	    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err) ||
	    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err) ||
	    rd_kafka_conf_set(conf, "message.timeout.ms", "120000", err, sizeof err)) {
		fprintf(stderr, "flyt_produce: %s\n", err);
		return 2;
	}
	rd_kafka_conf_set_dr_msg_cb(conf, dr);
	if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err))) {
		fprintf(stderr, "flyt_produce: %s\n", err);
		return 2;
	}
	start = now();
	while ((n = getline(&line, &cap, stdin)) > 0) {
		char *key = line, *hdr, *val;
		rd_kafka_resp_err_t e;

		if (line[n - 1] == '\n')
			line[--n] = '\0';
		if (n == 0) {
			rd_kafka_flush(rk, 120000);
			if (rd_kafka_outq_len(rk) > 0 || failed || delivered != count) {
				fprintf(stderr, "flyt_produce: checkpoint: %ld of %ld delivered, %ld failed\n",
					delivered, count, failed);
				return 1;
			}
			printf("synced %ld\n", delivered);
			fflush(stdout);
			continue;
		}
		if (!(hdr = strchr(key, '\t')) || !(val = strchr(hdr + 1, '\t'))) {
			fprintf(stderr, "flyt_produce: line %ld: want KEY<TAB>HEADERS<TAB>VALUE\n", count + 1);
			return 2;
		}
		*hdr++ = '\0';
		*val++ = '\0';
		if (rate > 0) {
			double due = start + count / rate;
			while (now() < due)
				rd_kafka_poll(rk, 1);
		}
		for (;;) {
			e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
				RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
				RD_KAFKA_V_KEY(*key ? key : NULL, strlen(key)),
				RD_KAFKA_V_HEADER("flyt.instance-flow-headers", hdr, -1),
				RD_KAFKA_V_VALUE(val, strlen(val)),
				RD_KAFKA_V_END);
			if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			rd_kafka_poll(rk, 50);
		}
		if (e) {
			fprintf(stderr, "flyt_produce: %s\n", rd_kafka_err2str(e));
			return 1;
		}
		rd_kafka_poll(rk, 0);
		count++;
	}
	rd_kafka_flush(rk, 120000);
	if (rd_kafka_outq_len(rk) > 0 || failed || delivered != count) {
		fprintf(stderr, "flyt_produce: %ld of %ld delivered, %ld failed\n", delivered, count, failed);
		return 1;
	}
	rd_kafka_destroy(rk);
	return 0;
}
