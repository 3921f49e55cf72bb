#!/bin/bash
# OVN central in one container: NB and SB ovsdb-servers (standalone, not clustered) on
# tcp 6641/6642 and unix sockets in /var/run/ovn, plus ovn-northd. The databases are created
# on first start in $OVN_DB_DIR (a volume keeps them). All three run in the foreground as
# children of this script; the first one to exit stops the container, so that the container
# runtime's restart policy and health check see it.
set -euo pipefail

db_dir=${OVN_DB_DIR:-/var/lib/ovn}
run_dir=${OVN_RUN_DIR:-/var/run/ovn}
mkdir -p "$db_dir" "$run_dir"

for db in nb sb; do
    file=$db_dir/ovn${db}_db.db
    [[ -f $file ]] || ovsdb-tool create "$file" "/usr/share/ovn/ovn-$db.ovsschema"
done

pids=()
ovsdb-server --no-chdir -vconsole:info -vfile:off \
    --pidfile="$run_dir/ovnnb_db.pid" --unixctl="$run_dir/ovnnb_db.ctl" \
    --remote="punix:$run_dir/ovnnb_db.sock" --remote=ptcp:6641 \
    "$db_dir/ovnnb_db.db" &
pids+=($!)
ovsdb-server --no-chdir -vconsole:info -vfile:off \
    --pidfile="$run_dir/ovnsb_db.pid" --unixctl="$run_dir/ovnsb_db.ctl" \
    --remote="punix:$run_dir/ovnsb_db.sock" --remote=ptcp:6642 \
    "$db_dir/ovnsb_db.db" &
pids+=($!)

# northd needs both databases listening.
for _ in $(seq 100); do
    [[ -S $run_dir/ovnnb_db.sock && -S $run_dir/ovnsb_db.sock ]] && break
    sleep 0.1
done
ovn-northd --no-chdir -vconsole:info -vfile:off \
    --pidfile="$run_dir/ovn-northd.pid" --unixctl="$run_dir/ovn-northd.ctl" \
    --ovnnb-db="unix:$run_dir/ovnnb_db.sock" --ovnsb-db="unix:$run_dir/ovnsb_db.sock" &
pids+=($!)

stop() {
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait || true
    exit 0
}
trap stop TERM INT

status=0
wait -n || status=$?
echo "ovn-central: a daemon exited (status $status); stopping the others" >&2
kill -TERM "${pids[@]}" 2>/dev/null || true
wait || true
exit "$status"
