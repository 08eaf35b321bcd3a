#!/bin/sh
# Writes every flyt_instance.* setting found as a file (a ConfigMap or Secret
# key) in /etc/flyt-instance/settings and /etc/flyt-instance/kafka into
# /run/flyt-instance/flyt_instance.conf, which postgresql.conf includes, then
# starts Postgres through the image's entrypoint.  Later directories win.
set -eu

out=/run/flyt-instance/flyt_instance.conf
umask 077
: >"$out.tmp"
for dir in /etc/flyt-instance/settings /etc/flyt-instance/kafka; do
	for f in "$dir"/flyt_instance.*; do
		[ -f "$f" ] || continue
		name=${f##*/}
		# One line; backslashes and single quotes escaped for postgresql.conf.
		value=$(tr -d '\r\n' <"$f" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")
		printf "%s = '%s'\n" "$name" "$value" >>"$out.tmp"
	done
done
mv "$out.tmp" "$out"

exec docker-entrypoint.sh postgres -c config_file=/opt/flyt-instance/postgresql.conf
