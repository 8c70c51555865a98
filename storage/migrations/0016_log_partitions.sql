-- The log's lifecycle (docs/compliance.md, "The log's lifecycle"): the
-- record tables that grow with every transfer are partitioned by month
-- (UTC), so that records older than `[retention] log` go as whole
-- partitions, each drop recorded in `log_drops`.
--
-- | table            | partitioned by | why that column                                      |
-- |------------------|----------------|------------------------------------------------------|
-- | aft_log_rows     | date_time      | the transfer's time: compliance queries filter on it |
-- | aft_log_amends   | date_time      | when the amendment was written                       |
-- | shares           | reported_at    | when mftd recorded it (always now); date_time, the   |
-- |                  |                | message's own time, may be weeks old for a late report|
-- | removals         | removed_at     | when the file was removed (always now)               |
--
-- Each table has one partition per month, named `<table>_pYYYYMM`, and a
-- DEFAULT partition `<table>_pdefault` that takes a row no month partition
-- does, so an insert never fails for want of a partition. mftd creates the
-- current month and the next three ahead at start and every ten minutes
-- after (`mftd_log_partitions_ahead()`, below); rows in a DEFAULT partition
-- (a clock far off, a hand-inserted old row) are moved into their months
-- the next time it runs.
--
-- PostgreSQL requires a unique index of a partitioned table to include the
-- partition key. Hence:
-- * primary keys become (id, partition key): `aft_log_pkey` is
--   (aft_index, date_time); aft_index stays unique because only the
--   sequence `aft_log_seq` hands it out;
-- * the chains' fork guard, unique (node, chain_seq), becomes a unique index
--   on every partition (created with it): two writers continuing one node's
--   chain in the same month are refused at insert as before. Two writers
--   across a month boundary are not refused (their rows land in different
--   partitions), but the node lock makes one process the only writer of its
--   node, and `mftd verify --log` names a fork wherever it is (the second
--   record with a sequence number does not link to the first);
-- * the foreign key aft_log_amends → aft_log_rows goes: a key into a
--   partitioned table would need the partition key, and would stop the
--   drop of a month whose rows a later month amends.
--
-- Statement triggers (TRUNCATE) are not inherited by partitions: every
-- partition gets its own, so a partition is as append-only as its table.

-- Views and functions over the tables' row types are rebuilt on the new
-- tables at the end.
DROP VIEW aft_log_erasures;
DROP VIEW aft_log;
DROP FUNCTION mftd_canon_row(aft_log_rows);
DROP FUNCTION mftd_canon_amend(aft_log_amends);
ALTER TABLE aft_log_amends DROP CONSTRAINT aft_log_amends_aft_index_fkey;

-- Which tables are partitioned, and by which column.
CREATE FUNCTION mftd_log_partition_key(tbl text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE tbl WHEN 'aft_log_rows' THEN 'date_time' WHEN 'aft_log_amends' THEN 'date_time'
                    WHEN 'shares' THEN 'reported_at' WHEN 'removals' THEN 'removed_at' END
$$;

-- What a partition does not inherit from its table: the TRUNCATE guard and,
-- for the chained tables, the fork guard.
CREATE FUNCTION mftd_log_partition_guard(tbl text, part text) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite()',
                   part || '_no_truncate', part);
    IF tbl IN ('aft_log_rows', 'aft_log_amends') THEN
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (node, chain_seq)', part || '_chain', part);
    END IF;
END
$$;

-- Creates `tbl`'s partition for the UTC month starting on `month` unless it
-- exists; true when created. The table is made, then attached, which locks
-- the parent less than CREATE TABLE … PARTITION OF (inserts go on).
CREATE FUNCTION mftd_log_partition_create(tbl text, month date) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    part text := tbl || '_p' || to_char(month, 'YYYYMM');
    lo timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, tbl);
    PERFORM mftd_log_partition_guard(tbl, part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   tbl, part, lo, hi);
    RETURN true;
END
$$;

-- Moves the rows of `tbl`'s DEFAULT partition into month partitions
-- (created as needed); returns how many moved. The DEFAULT partition is
-- detached, a new empty one attached, the rows inserted through the table
-- and the old one dropped: no row is updated or deleted, and each keeps its
-- content, so its hash still verifies.
CREATE FUNCTION mftd_log_partition_settle(tbl text) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    def text := tbl || '_pdefault';
    aside text := tbl || '_pdefault_settling';
    has_rows boolean;
    m date;
    moved bigint;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', def) INTO has_rows;
    IF NOT has_rows THEN
        RETURN 0;
    END IF;
    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', tbl, def);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', def, aside);
    IF to_regclass(def || '_chain') IS NOT NULL THEN
        EXECUTE format('ALTER INDEX %I RENAME TO %I', def || '_chain', aside || '_chain');
    END IF;
    FOR m IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %I AT TIME ZONE ''UTC'')::date FROM %I',
                            mftd_log_partition_key(tbl), aside) LOOP
        PERFORM mftd_log_partition_create(tbl, m);
    END LOOP;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', def, tbl);
    PERFORM mftd_log_partition_guard(tbl, def);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I DEFAULT', tbl, def);
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', tbl, aside);
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE format('DROP TABLE %I', aside);
    RETURN moved;
END
$$;

-- Makes sure `tbl` has the partition of the month `at` falls in.
CREATE FUNCTION mftd_log_partition_for(tbl text, at timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    month date := date_trunc('month', at AT TIME ZONE 'UTC')::date;
BEGIN
    IF to_regclass(tbl || '_p' || to_char(month, 'YYYYMM')) IS NULL THEN
        PERFORM mftd_log_partition_settle(tbl);
        PERFORM mftd_log_partition_create(tbl, month);
    END IF;
END
$$;

-- What mftd (the runtime role, which has no DDL right) calls at start and
-- every ten minutes: this month's partitions and the next three months',
-- and any DEFAULT partition's rows moved into their months. It runs as the
-- owner (SECURITY DEFINER) and can do nothing else: it takes no argument,
-- creates only empty partitions of these four tables and drops none. Nodes
-- calling it together take turns (advisory lock); one that waits longer
-- than five seconds for a table lock gives up and tries again later —
-- three months ahead leave time.
CREATE FUNCTION mftd_log_partitions_ahead() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET lock_timeout = '5s' AS $$
DECLARE
    t text;
    i integer;
    made integer := 0;
    month date;
BEGIN
    PERFORM pg_advisory_xact_lock(7314607);
    FOREACH t IN ARRAY ARRAY['aft_log_rows', 'aft_log_amends', 'shares', 'removals'] LOOP
        PERFORM mftd_log_partition_settle(t);
        FOR i IN 0..3 LOOP
            month := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
            IF mftd_log_partition_create(t, month) THEN
                made := made + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN made;
END
$$;
REVOKE EXECUTE ON FUNCTION mftd_log_partition_guard(text, text), mftd_log_partition_create(text, date),
    mftd_log_partition_settle(text), mftd_log_partition_for(text, timestamptz) FROM PUBLIC;

-- Converts one table in place: the old table is renamed, a partitioned one
-- with the same columns (in the same order) takes its name, its months'
-- partitions are created, the rows copied, the old table dropped. Indexes
-- and triggers are created on the new table by the caller.
CREATE FUNCTION pg_temp.mftd_partition_table(tbl text, seq text, seq_column text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    old text := tbl || '_unpartitioned';
    m date;
BEGIN
    EXECUTE format('ALTER SEQUENCE %I OWNED BY NONE', seq);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tbl, old);
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS) PARTITION BY RANGE (%I)',
                   tbl, old, mftd_log_partition_key(tbl));
    EXECUTE format('ALTER SEQUENCE %I OWNED BY %I.%I', seq, tbl, seq_column);
    FOR m IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %I AT TIME ZONE ''UTC'')::date FROM %I',
                            mftd_log_partition_key(tbl), old) LOOP
        PERFORM mftd_log_partition_create(tbl, m);
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_pdefault', tbl);
    PERFORM mftd_log_partition_guard(tbl, tbl || '_pdefault');
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', tbl, old);
    EXECUTE format('DROP TABLE %I', old);
END
$$;

-- The old tables' indexes and keys give their names to the new ones.
ALTER TABLE aft_log_rows DROP CONSTRAINT aft_log_pkey;
DROP INDEX aft_log_rows_jid_time, aft_log_rows_to_jid_time, aft_log_rows_filename,
    aft_log_rows_time, aft_log_rows_scan_flagged, aft_log_rows_chain;
ALTER TABLE aft_log_amends DROP CONSTRAINT aft_log_amends_pkey;
DROP INDEX aft_log_amends_row, aft_log_amends_chain;
ALTER TABLE shares DROP CONSTRAINT shares_pkey;
DROP INDEX shares_resource, shares_recipient_time, shares_sender_time;
ALTER TABLE removals DROP CONSTRAINT removals_pkey;
DROP INDEX removals_resource, removals_time;

-- The parents' indexes first (each partition gets its copy as it is
-- attached), then the rows.
SELECT pg_temp.mftd_partition_table('aft_log_rows', 'aft_log_seq', 'aft_index');
ALTER TABLE aft_log_rows ADD CONSTRAINT aft_log_pkey PRIMARY KEY (aft_index, date_time);
CREATE INDEX aft_log_rows_jid_time ON aft_log_rows (jid, date_time);
CREATE INDEX aft_log_rows_to_jid_time ON aft_log_rows (to_jid, date_time);
CREATE INDEX aft_log_rows_filename ON aft_log_rows (filename, method);
CREATE INDEX aft_log_rows_time ON aft_log_rows (date_time);
CREATE INDEX aft_log_rows_scan_flagged ON aft_log_rows (date_time)
    WHERE scan_verdict IN ('infected', 'unscanned');
-- "Who fetched the file the user called X" (docs/operations.md) looks the
-- upload up by its name: without an index that is a scan of every month
-- (about 5 s at 10 million rows, measured: docs/performance.md).
CREATE INDEX aft_log_rows_real_filename ON aft_log_rows (real_filename) WHERE method = 'POST';
-- (node, chain_seq) is each partition's unique fork guard, which also
-- serves `mftd verify --log`'s reading of a chain in order.

SELECT pg_temp.mftd_partition_table('aft_log_amends', 'aft_log_amends_amend_id_seq', 'amend_id');
ALTER TABLE aft_log_amends ADD CONSTRAINT aft_log_amends_pkey PRIMARY KEY (amend_id, date_time);
CREATE INDEX aft_log_amends_row ON aft_log_amends (aft_index, amend_id);

SELECT pg_temp.mftd_partition_table('shares', 'shares_share_id_seq', 'share_id');
ALTER TABLE shares ADD CONSTRAINT shares_pkey PRIMARY KEY (share_id, reported_at);
CREATE INDEX shares_resource ON shares (resource, date_time);
CREATE INDEX shares_recipient_time ON shares (recipient, date_time);
CREATE INDEX shares_sender_time ON shares (sender, date_time);

SELECT pg_temp.mftd_partition_table('removals', 'removals_removal_id_seq', 'removal_id');
ALTER TABLE removals ADD CONSTRAINT removals_pkey PRIMARY KEY (removal_id, removed_at);
CREATE INDEX removals_resource ON removals (resource);
CREATE INDEX removals_time ON removals (removed_at);

-- Append-only, as before (row triggers are inherited by every partition).
CREATE TRIGGER aft_log_rows_append_only BEFORE UPDATE OR DELETE ON aft_log_rows
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER aft_log_rows_no_truncate BEFORE TRUNCATE ON aft_log_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER aft_log_amends_append_only BEFORE UPDATE OR DELETE ON aft_log_amends
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER aft_log_amends_no_truncate BEFORE TRUNCATE ON aft_log_amends
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER shares_append_only BEFORE UPDATE OR DELETE ON shares
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER shares_no_truncate BEFORE TRUNCATE ON shares
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER removals_append_only BEFORE UPDATE OR DELETE ON removals
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER removals_no_truncate BEFORE TRUNCATE ON removals
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();

SELECT mftd_log_partitions_ahead();

-- The canonical encodings, on the new row types (unchanged).
CREATE FUNCTION mftd_canon_row(r aft_log_rows) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT mftd_canon('row') || mftd_canon(r.node) || mftd_canon(r.chain_seq::text)
        || mftd_canon(r.aft_index::text) || mftd_canon(r.jid) || mftd_canon(r.to_jid)
        || mftd_canon(r.method) || mftd_canon(r.filename) || mftd_canon(r.real_filename)
        || mftd_canon(r.file_type) || mftd_canon(r.chat_type) || mftd_canon(r.file_server)
        || mftd_canon(r.file_path) || mftd_canon(r.file_size::text) || mftd_canon_time(r.date_time)
        || mftd_canon(r.sha256) || mftd_canon(r.content_type) || mftd_canon(r.client_address)
        || mftd_canon(r.user_agent) || mftd_canon(r.http_status::text)
        || mftd_canon(r.bytes_sent::text) || mftd_canon(r.duration_ms::text)
        || mftd_canon(r.scan_verdict) || mftd_canon(r.scan_detail)
$$;

CREATE FUNCTION mftd_canon_amend(a aft_log_amends) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT mftd_canon('amend') || mftd_canon(a.node) || mftd_canon(a.chain_seq::text)
        || mftd_canon(a.amend_id::text) || mftd_canon(a.aft_index::text) || mftd_canon(a.what)
        || mftd_canon(a.to_jid) || mftd_canon(a.chat_type) || mftd_canon(a.http_status::text)
        || mftd_canon(a.bytes_sent::text) || mftd_canon(a.duration_ms::text)
        || mftd_canon_time(a.date_time)
$$;

-- The same view. An amendment is written after its row, so each lookup
-- reads only amendments from a day before the row's time on: the day
-- absorbs clocks of different nodes that disagree, and the bound lets
-- PostgreSQL skip the months of amendments before the row (run-time
-- partition pruning) instead of probing every month's index.
CREATE VIEW aft_log AS
SELECT r.aft_index, r.jid,
       COALESCE((SELECT m.to_jid FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.to_jid IS NOT NULL
                   AND m.date_time >= r.date_time - interval '1 day'
                 ORDER BY m.amend_id DESC LIMIT 1), r.to_jid)::varchar(3071) AS to_jid,
       r.method, r.filename, r.real_filename, r.file_type,
       COALESCE((SELECT m.chat_type FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.chat_type IS NOT NULL
                   AND m.date_time >= r.date_time - interval '1 day'
                 ORDER BY m.amend_id DESC LIMIT 1), r.chat_type)::varchar(10) AS chat_type,
       r.file_server, r.file_path, r.file_size, r.date_time, r.sha256, r.content_type, r.node,
       r.client_address, r.user_agent,
       COALESCE((SELECT m.http_status FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.http_status IS NOT NULL
                   AND m.date_time >= r.date_time - interval '1 day'
                 ORDER BY m.amend_id DESC LIMIT 1), r.http_status) AS http_status,
       COALESCE((SELECT m.bytes_sent FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.bytes_sent IS NOT NULL
                   AND m.date_time >= r.date_time - interval '1 day'
                 ORDER BY m.amend_id DESC LIMIT 1), r.bytes_sent) AS bytes_sent,
       COALESCE((SELECT m.duration_ms FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.duration_ms IS NOT NULL
                   AND m.date_time >= r.date_time - interval '1 day'
                 ORDER BY m.amend_id DESC LIMIT 1), r.duration_ms) AS duration_ms,
       r.scan_verdict, r.scan_detail
FROM aft_log_rows r;

CREATE TRIGGER aft_log_append_only INSTEAD OF UPDATE OR DELETE ON aft_log
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();

-- A row inserted into the view by hand is chained as before, and its
-- month's partition made first (a Cisco-era import of old rows lands in
-- its months, not in the DEFAULT partition).
CREATE OR REPLACE FUNCTION mftd_aft_log_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r aft_log_rows;
BEGIN
    r.aft_index := COALESCE(NEW.aft_index, nextval('aft_log_seq'));
    r.jid := NEW.jid;
    r.to_jid := NEW.to_jid;
    r.method := NEW.method;
    r.filename := NEW.filename;
    r.real_filename := NEW.real_filename;
    r.file_type := NEW.file_type;
    r.chat_type := NEW.chat_type;
    r.file_server := NEW.file_server;
    r.file_path := NEW.file_path;
    r.file_size := NEW.file_size;
    r.date_time := NEW.date_time;
    r.sha256 := COALESCE(NEW.sha256, '');
    r.content_type := COALESCE(NEW.content_type, '');
    r.node := COALESCE(NEW.node, '');
    r.client_address := COALESCE(NEW.client_address, '');
    r.user_agent := COALESCE(NEW.user_agent, '');
    r.http_status := COALESCE(NEW.http_status, 0);
    r.bytes_sent := COALESCE(NEW.bytes_sent, 0);
    r.duration_ms := COALESCE(NEW.duration_ms, 0);
    r.scan_verdict := COALESCE(NEW.scan_verdict, '');
    r.scan_detail := COALESCE(NEW.scan_detail, '');
    PERFORM mftd_log_partition_for('aft_log_rows', r.date_time);
    PERFORM pg_advisory_xact_lock(7314605, hashtext(r.node));
    SELECT COALESCE(max(chain_seq), 0) + 1 INTO r.chain_seq FROM aft_log_rows WHERE node = r.node;
    SELECT COALESCE((SELECT chain_hash FROM aft_log_rows
                     WHERE node = r.node AND chain_seq = r.chain_seq - 1), repeat('0', 64))
      INTO r.chain_prev;
    r.chain_hash := mftd_chain_hash(r.chain_prev, mftd_canon_row(r));
    INSERT INTO aft_log_rows SELECT r.*;
    NEW.aft_index := r.aft_index;
    RETURN NEW;
END
$$;
CREATE TRIGGER aft_log_insert INSTEAD OF INSERT ON aft_log
    FOR EACH ROW EXECUTE FUNCTION mftd_aft_log_insert();

CREATE VIEW aft_log_erasures AS
    SELECT a.aft_index, a.method, a.jid, a.filename, a.date_time,
           r.removed_at AS erased_at, r.removed_by AS erased_by, r.note AS erasure_reason
    FROM aft_log a JOIN removals r ON r.resource = a.filename AND r.reason = 'erasure';

-- The record of records: every month partition `mftd db prune-log` dropped
-- (which table, which month, how many rows, the limit, who ran it), and for
-- the chained tables each node's run of sequence numbers that went with it
-- and the hash of the run's last record — the anchor `mftd verify --log`
-- checks the first kept record against. Append-only, never partitioned.
CREATE TABLE log_drops (
    drop_id      BIGSERIAL     PRIMARY KEY,
    table_name   VARCHAR(63)   NOT NULL,
    partition    VARCHAR(63)   NOT NULL,
    month        DATE          NOT NULL,
    row_count    BIGINT        NOT NULL,
    older_than   VARCHAR(64)   NOT NULL,
    cut_before   TIMESTAMPTZ   NOT NULL,
    dropped_by   VARCHAR(3071) NOT NULL,
    db_user      VARCHAR(255)  NOT NULL DEFAULT session_user,
    dropped_at   TIMESTAMPTZ   NOT NULL DEFAULT now()
);
CREATE INDEX log_drops_table_month ON log_drops (table_name, month);

CREATE TABLE log_drop_chains (
    drop_id    BIGINT        NOT NULL REFERENCES log_drops (drop_id),
    node       VARCHAR(255)  NOT NULL,
    from_seq   BIGINT        NOT NULL,
    to_seq     BIGINT        NOT NULL,
    records    BIGINT        NOT NULL,
    last_hash  VARCHAR(64)   NOT NULL,
    PRIMARY KEY (drop_id, node, from_seq)
);

CREATE TRIGGER log_drops_append_only BEFORE UPDATE OR DELETE ON log_drops
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER log_drops_no_truncate BEFORE TRUNCATE ON log_drops
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER log_drop_chains_append_only BEFORE UPDATE OR DELETE ON log_drop_chains
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER log_drop_chains_no_truncate BEFORE TRUNCATE ON log_drop_chains
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
