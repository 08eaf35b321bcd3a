#!/usr/bin/env bash
#
# script/install.sh — `make install` for `make test` and `make run`.
#
# Runs from the repository root.  Uses $MAKE when make set it (so the same
# make, and through MAKEFLAGS the same command-line variables such as
# PG_CONFIG=..., carry over), and $PG_CONFIG to find the install directories.
#
# As a normal user the PostgreSQL directories are usually root's: then
# `sudo make install` is needed once.  When the installed files are already
# identical to the build products there is nothing to install and we carry
# on; otherwise we say what to run and exit 1.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

make=${MAKE:-make}
pg_config=${PG_CONFIG:-pg_config}
pkglibdir=$("$pg_config" --pkglibdir)
extdir=$("$pg_config" --sharedir)/extension
ext=flyt_instance

writable() {
	[ -w "$1" ]
}

# True when every build product is installed and byte-for-byte identical.
up_to_date() {
	local f
	cmp -s "$ext.so" "$pkglibdir/$ext.so" || return 1
	cmp -s "$ext.control" "$extdir/$ext.control" || return 1
	for f in sql/"$ext"--*.sql; do
		[ -e "$f" ] || continue
		cmp -s "$f" "$extdir/$(basename "$f")" || return 1
	done
	return 0
}

if [ "$(id -u)" -eq 0 ] || { writable "$pkglibdir" && writable "$extdir"; }; then
	exec "$make" --no-print-directory install
fi

if up_to_date; then
	echo "install: $ext is already installed and up to date"
	exit 0
fi

cat >&2 <<EOF
install: $pkglibdir and $extdir are not writable by $(id -un),
and the installed $ext differs from this build (or is missing).
Install it once with:

    sudo ${make} install

then run this command again.
EOF
exit 1
