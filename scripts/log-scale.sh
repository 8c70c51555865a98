#!/usr/bin/env bash
# The compliance queries on a large generated transfer log, partitioned by
# month (migration 16): each query's EXPLAIN (ANALYZE, BUFFERS) plan, its
# time cold-ish (first run) and warm (best of three), and what partition
# pruning did. Runs a throwaway PostgreSQL cluster in a temporary directory
# and removes it at the end (KEEP=1 keeps it; it is several GB).
#
#   scripts/log-scale.sh                         ROWS=10000000 over MONTHS=48
#   ROWS=1000000 scripts/log-scale.sh            a quick run
#   ROWS=… MONTHS=… OUT=report.txt scripts/log-scale.sh
#
# The log: ROWS rows of aft_log_rows, one upload (POST) and two downloads
# (GET) per file, 50 000 users, 1 000 rooms (one upload in ten goes to a
# room), evenly over MONTHS months up to now; one 'end' amendment per
# download in aft_log_amends and one share per upload. Rows are written
# straight into the tables (not through mftd, which would take days): the
# chain columns are filled with stand-in hashes, so `verify --log` is not
# part of this run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-10000000}
MONTHS=${MONTHS:-48}
PORT=${PORT:-55439}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
MFTD=${MFTD:-target/debug/mftd}
OUT=${OUT:-target/log-scale.txt}
[ -x "$MFTD" ] || cargo build --bins
DIR=$(mktemp -d /tmp/mftd-log-scale.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -o "-p $PORT -k $DIR \
  -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c work_mem=64MB \
  -c maintenance_work_mem=512MB -c max_wal_size=8GB -c fsync=off \
  -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
echo "$URL" > "$DIR/url"
"$MFTD" db migrate --database-url-file "$DIR/url" >/dev/null
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -d "$URL" -v rows="$ROWS" -v months="$MONTHS")

mkdir -p "$(dirname "$OUT")"
exec > >(tee "$OUT") 2>&1
echo "# log-scale: $ROWS rows over $MONTHS months, $(date -u +%FT%TZ), $(nproc) cores"
"${PSQL[@]}" -At -c "SELECT version()"

start=$(date +%s)
"${PSQL[@]}" <<'SQL'
\set ON_ERROR_STOP 1
-- Every month's partitions (what mftd_log_partitions_ahead() and the
-- owner's imports make), so nothing lands in the DEFAULT partitions.
SELECT count(*) AS partitions_checked FROM (
    SELECT mftd_log_partition_for(t, now() - make_interval(months => m))
    FROM unnest(ARRAY['aft_log_rows', 'aft_log_amends', 'shares']) t, generate_series(0, :months) m) p;
-- Rows in batches of a million (one transaction each).
SELECT format('INSERT INTO aft_log_rows (aft_index, jid, to_jid, method, filename, real_filename,
    file_type, chat_type, file_server, file_path, file_size, date_time, sha256, node, client_address,
    user_agent, http_status, bytes_sent, duration_ms, chain_seq, chain_prev, chain_hash)
  SELECT i,
    CASE WHEN i %% 3 = 0 THEN ''user'' || (i / 3 %% 50000) ELSE ''user'' || ((i / 3 * 7 + i) %% 50000) END || ''@example.com'',
    CASE WHEN i / 3 %% 10 = 0 THEN ''room'' || (i / 3 %% 1000) || ''@conference.example.com''
         ELSE ''user'' || (i / 3 * 13 %% 50000) || ''@example.com'' END,
    CASE WHEN i %% 3 = 0 THEN ''POST'' ELSE ''GET'' END,
    ''20260101-00-im-'' || lpad(to_hex(i / 3), 22, ''0''), ''report-'' || (i / 3) || ''.pdf'', ''pdf'',
    CASE WHEN i / 3 %% 10 = 0 THEN ''groupchat'' ELSE ''im'' END,
    ''files.example.com'', ''/srv/mft/node_1/files/im/20260101/00/x'', 100000 + i %% 900000,
    now() - make_interval(days => %s * 30) + (i::float8 / %s) * make_interval(days => %s * 30),
    md5(i::text) || md5((i / 3)::text), ''node_1'', ''192.0.2.'' || (i %% 250), ''Conversations/2.17'',
    CASE WHEN i %% 3 = 0 THEN 201 ELSE 0 END, 0, 0, i, md5((i - 1)::text) || md5(''p''), md5(i::text) || md5(''p'')
  FROM generate_series(%s, %s) i', :months, :rows, :months, b * 1000000 + 1, least((b + 1) * 1000000, :rows))
FROM generate_series(0, (:rows - 1) / 1000000) b \gexec
-- One end per download, a second after it.
INSERT INTO aft_log_amends (aft_index, node, what, http_status, bytes_sent, duration_ms, date_time,
                            chain_seq, chain_prev, chain_hash)
SELECT aft_index, 'node_1', 'end', 200, file_size, 900, date_time + interval '1 second',
       row_number() OVER (), md5(aft_index::text), md5(aft_index::text)
FROM aft_log_rows WHERE method = 'GET';
-- One share per upload.
INSERT INTO shares (resource, sender, recipient, chat_type, reported_by, date_time, reported_at)
SELECT filename, jid || '/phone', to_jid, chat_type, 'example.com', date_time + interval '5 seconds',
       date_time + interval '5 seconds'
FROM aft_log_rows WHERE method = 'POST';
VACUUM ANALYZE aft_log_rows, aft_log_amends, shares;
SQL
echo "generated in $(( $(date +%s) - start )) s"
"${PSQL[@]}" -At -F ' ' -c "SELECT 'aft_log_rows', count(*)::text FROM aft_log_rows UNION ALL
  SELECT 'aft_log_amends', count(*)::text FROM aft_log_amends UNION ALL SELECT 'shares', count(*)::text FROM shares UNION ALL
  SELECT 'partitions of aft_log_rows', count(*)::text FROM pg_inherits WHERE inhparent = 'aft_log_rows'::regclass UNION ALL
  SELECT 'database size', pg_size_pretty(pg_database_size(current_database()))::text"

# The subjects: a file from the middle, a user, a month, a room.
MID=$(( ROWS / 2 / 3 * 3 ))
RES="20260101-00-im-$(printf '%022x' $(( MID / 3 )))"
MONTH_START=$("${PSQL[@]}" -At -c "SELECT to_char(date_trunc('month', now() - interval '14 months'), 'YYYY-MM-DD')")
MONTH_END=$("${PSQL[@]}" -At -c "SELECT to_char(date_trunc('month', now() - interval '14 months') + interval '1 month', 'YYYY-MM-DD')")
Q=(-v res="$RES" -v usr="user4242@example.com" -v m0="$MONTH_START" -v m1="$MONTH_END"
   -v room="room70@conference.example.com")

query() {
  local name=$1 sql=$2
  echo
  echo "## $name"
  echo "$sql"
  printf 'EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) %s;\n' "$sql" | "${PSQL[@]}" "${Q[@]}" | sed 's/^/    /'
  for run in 1 2 3; do
    # Every column of every row is computed (count(*) alone would let the
    # planner skip the view's amendment lookups).
    printf '\\timing on\nSELECT count(*), sum(length(q::text)) > 0 FROM (%s) q;\n' "$sql" | "${PSQL[@]}" "${Q[@]}" -At |
      sed -n "s/^Time: /run $run: /p; s/^\([0-9]*\)|t$/rows: \1/p" | tr '\n' ' '
    echo
  done
}

query "who sent and fetched file X (its resource)" \
  "SELECT date_time, method, jid, to_jid, http_status, bytes_sent FROM aft_log WHERE filename = :'res' ORDER BY date_time"
query "who sent and fetched file X (the name the user gave it), operations.md" \
  "SELECT g.date_time, g.jid, g.client_address, g.http_status, g.bytes_sent FROM aft_log g WHERE g.method = 'GET' AND g.filename IN (SELECT filename FROM aft_log WHERE method = 'POST' AND real_filename = 'report-$(( MID / 3 )).pdf') ORDER BY g.date_time"
query "all transfers of user U in one month" \
  "SELECT date_time, method, filename, to_jid, http_status, bytes_sent FROM aft_log WHERE jid = :'usr' AND date_time >= :'m0' AND date_time < :'m1' ORDER BY date_time"
query "all transfers of user U, every month" \
  "SELECT date_time, method, filename, to_jid, http_status, bytes_sent FROM aft_log WHERE jid = :'usr' ORDER BY date_time"
query "downloads of room R's files uploaded in one month" \
  "SELECT g.date_time, g.jid, g.filename, g.http_status, g.bytes_sent FROM aft_log g WHERE g.method = 'GET' AND g.filename IN (SELECT filename FROM aft_log_rows WHERE method = 'POST' AND to_jid = :'room' AND date_time >= :'m0' AND date_time < :'m1') ORDER BY g.date_time"
query "files shared in room R in one month (shares)" \
  "SELECT s.date_time, split_part(s.sender, '/', 1), s.resource FROM shares s WHERE s.recipient = :'room' AND s.date_time >= :'m0' AND s.date_time < :'m1' ORDER BY s.date_time"
