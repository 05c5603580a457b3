# shellcheck shell=bash
# The throwaway PostgreSQL 15 cluster of scripts/demo.sh and bench/run.sh:
# initdb as the postgres user in a postgres-owned temporary directory, hannoy
# preloaded, listening only on a unix socket there, and stopped and removed
# on exit, failure or Ctrl-C (or kept when asked).  Sourced after
# scripts/lib/common.sh.
#
# cluster_start sets, for the sourcing script:
#   CLUSTER_DIR   the temporary directory (socket, logs, data)
#   PGDATA        the data directory
#   PORT          the port number of the socket
#   CONNINFO      a libpq connection string for the cluster
CLUSTER_DIR=
PGDATA=
PORT=
CONNINFO=
CLUSTER_KEEP_VAR=   # the environment variable that keeps the cluster (=1)
CLUSTER_EXIT_HOOK=  # a function run on exit after the cluster is handled

# Runs a command as the postgres OS user (PostgreSQL refuses to run as root),
# from the cluster directory so that it never needs to read the checkout.
as_postgres() {
	(cd "$CLUSTER_DIR" && runuser -u postgres -- "$@")
}

# Runs psql against the cluster as the client (root), stopping on errors.
cluster_psql() {
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CLUSTER_DIR" -p "$PORT" -U postgres \
		-d postgres "$@"
}

# Prints the value of one SQL query, unaligned and without headers.
cluster_value() {
	cluster_psql -tA -c "$1"
}

# Prints a TCP port that nothing listens on (the server itself only listens
# on its unix socket, but a free number avoids confusing anyone).
pick_port() {
	local port
	for _ in $(seq 50); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	die "could not find a free port"
}

# Creates the cluster in /tmp/hannoy-$1.XXXXXX, appends the settings every
# cluster needs and then the remaining arguments (one postgresql.conf line
# each) to postgresql.conf, starts it and creates the hannoy extension.
cluster_start() {
	local name=$1
	shift
	CLUSTER_DIR=$(mktemp -d "/tmp/hannoy-$name.XXXXXX")
	chown postgres:postgres "$CLUSTER_DIR"
	chmod 700 "$CLUSTER_DIR"
	PGDATA=$CLUSTER_DIR/data
	PORT=$(pick_port)
	CONNINFO="host=$CLUSTER_DIR port=$PORT user=postgres dbname=postgres"
	say "cluster: initdb in $PGDATA, port $PORT"
	as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --locale=C -E UTF8 \
		>"$CLUSTER_DIR/initdb.log" 2>&1 || {
		cat "$CLUSTER_DIR/initdb.log" >&2
		die "initdb failed"
	}
	{
		printf '\n# hannoy %s\n' "$name"
		printf '%s\n' "shared_preload_libraries = 'hannoy'" "listen_addresses = ''" \
			"port = $PORT" "unix_socket_directories = '$CLUSTER_DIR'" "$@"
	} >>"$PGDATA/postgresql.conf"
	# setsid keeps the server out of the terminal's process group, so Ctrl-C
	# reaches only the script, whose trap then stops the server cleanly.
	as_postgres setsid -w "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$CLUSTER_DIR/postgres.log" -w -t 60 \
		start >/dev/null || die "the server did not start"
	cluster_psql -c "CREATE EXTENSION hannoy"
}

# Stops the server: fast shutdown, then immediate if that hangs.
cluster_stop() {
	[[ -f $PGDATA/postmaster.pid ]] || return 0
	as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
		as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
		true
}

# Tells how to reach and later remove a cluster that is kept.
cluster_print_keep() {
	cat <<END

The cluster is still running ($CLUSTER_KEEP_VAR=1):
  connect:  $PG_BIN/psql -h $CLUSTER_DIR -p $PORT -U postgres postgres
  conninfo: $CONNINFO
  log:      $CLUSTER_DIR/postgres.log
  remove:   runuser -u postgres -- $PG_BIN/pg_ctl -D $PGDATA stop && rm -rf $CLUSTER_DIR
END
}

# Installs the traps that handle the cluster however the script ends: the
# environment variable named $1 keeps it when it is 1; the function named $2,
# if given, runs after it with the exit status.
cluster_traps() {
	CLUSTER_KEEP_VAR=$1
	CLUSTER_EXIT_HOOK=${2:-}
	trap cluster_on_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# The EXIT trap: on failure shows the end of the server log, then keeps the
# cluster or stops and removes it, runs the exit hook and exits with the
# script's status.
cluster_on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $CLUSTER_DIR && -d $CLUSTER_DIR ]]; then
		if ((rc != 0)) && [[ -f $CLUSTER_DIR/postgres.log ]]; then
			printf '\n%s: failed (exit %d); last lines of the server log:\n' "${0##*/}" "$rc" >&2
			tail -n 20 "$CLUSTER_DIR/postgres.log" >&2 || true
		fi
		if [[ ${!CLUSTER_KEEP_VAR:-0} == 1 && -f $PGDATA/postmaster.pid ]]; then
			cluster_print_keep
		else
			cluster_stop
			rm -rf -- "$CLUSTER_DIR"
		fi
	fi
	if [[ -n $CLUSTER_EXIT_HOOK ]]; then
		"$CLUSTER_EXIT_HOOK" "$rc"
	fi
	exit "$rc"
}
