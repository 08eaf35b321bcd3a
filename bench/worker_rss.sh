#!/usr/bin/env bash
#
# bench/worker_rss.sh — does the worker's memory grow with the messages it
# handles?  Not part of `make test` (test/run.sh only runs test/integration).
#
# Runs 100k instance-received messages through the worker, 10k at a time
# (each batch produced, then ingested, and the resulting instance-registered
# messages drained from the outbox before the next), and samples the worker's
# /proc/<pid>/status after every batch: VmRSS, RssAnon, RssFile, RssShmem.
#
# VmRSS counts the shared-buffer pages the worker has touched (RssShmem);
# those grow towards shared_buffers as the tables grow and are not the
# worker's own memory.  The verdict is therefore on VmRSS - RssShmem (private
# memory: RssAnon + RssFile) between the 20k and the 100k sample: it fails
# (exit 1) when that grows by more than 10 MB.  The VmRSS growth is printed
# too.
#
#   bench/worker_rss.sh            # FLYT_RSS_TOTAL / FLYT_RSS_BATCH to change sizes
# Functions called through lc_wait look unreachable to shellcheck; helpers
# with optional arguments are called without any.
# shellcheck disable=SC2317,SC2119
set -euo pipefail

# shellcheck source=test/integration/lib_crash.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/test/integration/lib_crash.sh"

TOTAL=${FLYT_RSS_TOTAL:-100000}
BATCH=${FLYT_RSS_BATCH:-10000}
BASE=${FLYT_RSS_BASE:-20000}     # growth is measured from this sample
LIMIT_KB=${FLYT_RSS_LIMIT_KB:-10240}

lc_init "${FLYT_RSS_TIME_LIMIT:-1800}"
lc_broker_start
lc_cluster_create_worker
cluster_start
cluster_env
lc_create_extension || lc_finish
lc_build_producer

if lc_wait 30 lc_state_in running; then
	lc_pass "worker is running"
else
	lc_bail "worker is running" "state '$(lc_state)'"
fi
pid=$(lc_worker_pid)
[ -n "$pid" ] || lc_bail "worker pid from pg_stat_activity"

# status_kb FIELD — a field of /proc/$pid/status in kB.
status_kb() {
	awk -v f="$1:" '$1 == f { print $2 }' "/proc/$pid/status"
}

declare -A priv vmrss
printf '# %9s %10s %10s %10s %10s %10s\n' messages VmRSS_kB RssAnon_kB RssFile_kB RssShmem_kB private_kB
sample() {
	local n=$1 v a f s
	v=$(status_kb VmRSS)
	a=$(status_kb RssAnon)
	f=$(status_kb RssFile)
	s=$(status_kb RssShmem)
	vmrss[$n]=$v
	priv[$n]=$((a + f))
	printf '  %9s %10s %10s %10s %10s %10s\n' "$n" "$v" "$a" "$f" "$s" "$((a + f))"
}
sample 0

done_n=0
batch_no=0
t0=$SECONDS
while [ "$done_n" -lt "$TOTAL" ]; do
	batch_no=$((batch_no + 1))
	lc_gen_messages "$LC_WORK/batch.tsv" "rss-$batch_no" "$BATCH"
	lc_produce "$LC_WORK/batch.tsv" || lc_bail "produce batch $batch_no"
	done_n=$((done_n + BATCH))
	lc_wait 300 lc_count_at_least "$done_n" ||
		lc_bail "batch $batch_no ingested within 300 s" "instances: $(lc_sql 'SELECT count(*) FROM flyt.instance')"
	lc_wait 300 lc_sql_true 'SELECT count(*) = 0 FROM flyt.outbox' ||
		lc_bail "outbox drained after batch $batch_no within 300 s" "$(lc_sql 'SELECT count(*) FROM flyt.outbox') left"
	if [ "$(lc_worker_pid)" != "$pid" ]; then
		lc_bail "the worker keeps its pid" "was $pid, now '$(lc_worker_pid)'"
	fi
	sample "$done_n"
done
echo "# $TOTAL messages in $((SECONDS - t0)) s"

lc_eq "exactly $TOTAL instances" "$TOTAL" "$(lc_sql 'SELECT count(*) FROM flyt.instance')"
lc_eq "no dead letters" 0 "$(lc_sql 'SELECT count(*) FROM flyt.dead_letter')"

if [ -z "${priv[$BASE]:-}" ]; then BASE=$BATCH; fi
growth=$((priv[$TOTAL] - priv[$BASE]))
vgrowth=$((vmrss[$TOTAL] - vmrss[$BASE]))
echo "# growth from $BASE to $TOTAL messages: private (VmRSS - RssShmem) ${growth} kB, VmRSS ${vgrowth} kB"
if [ "$growth" -le "$LIMIT_KB" ]; then
	lc_pass "worker private memory grows ${growth} kB <= ${LIMIT_KB} kB from $BASE to $TOTAL messages"
else
	lc_fail "worker private memory grows ${growth} kB > ${LIMIT_KB} kB from $BASE to $TOTAL messages"
fi
lc_finish
