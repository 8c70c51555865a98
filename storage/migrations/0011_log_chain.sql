-- The transfer log becomes append-only and tamper-evident
-- (docs/compliance.md, "The hash chain").
--
-- * `aft_log_rows` holds the transfer rows as they were written (the former
--   `aft_log` table, renamed: its primary key keeps Cisco's name
--   `aft_log_pkey`). Nothing in it is ever updated.
-- * `aft_log_amends` holds what is learnt about a row later: a download's
--   end (status, bytes, duration), a recipient and chat type from the
--   uploader's first share. Each amendment is a new row.
-- * `aft_log` is a view with the AFT_LOG columns in their order, showing each
--   row with its latest amendment per column, so readers see what they saw.
-- * `log_checkpoints`: once a day each node writes the heads of its chains,
--   optionally signed with a key the database never sees.
--
-- Every row of the three tables is hash-chained per node and per table:
-- `chain_hash` = hex SHA-256 of (`chain_prev` || canonical encoding), and
-- `chain_prev` is the previous row's `chain_hash` in that node's chain
-- (64 zeros for the first). The canonical encodings are the functions
-- mftd_canon_row/_amend/_checkpoint below; mftd computes the same bytes on
-- its own and `mftd verify --log` recomputes every chain.

ALTER TABLE aft_log RENAME TO aft_log_rows;
ALTER INDEX aft_log_jid_time RENAME TO aft_log_rows_jid_time;
ALTER INDEX aft_log_to_jid_time RENAME TO aft_log_rows_to_jid_time;
ALTER INDEX aft_log_filename RENAME TO aft_log_rows_filename;
ALTER INDEX aft_log_time RENAME TO aft_log_rows_time;
ALTER INDEX aft_log_scan_flagged RENAME TO aft_log_rows_scan_flagged;
ALTER TABLE aft_log_rows ADD COLUMN chain_seq  BIGINT;
ALTER TABLE aft_log_rows ADD COLUMN chain_prev VARCHAR(64);
ALTER TABLE aft_log_rows ADD COLUMN chain_hash VARCHAR(64);
CREATE UNIQUE INDEX aft_log_rows_chain ON aft_log_rows (node, chain_seq);

CREATE TABLE aft_log_amends (
    amend_id     BIGSERIAL     PRIMARY KEY,
    aft_index    BIGINT        NOT NULL REFERENCES aft_log_rows (aft_index),
    node         VARCHAR(255)  NOT NULL,
    what         VARCHAR(16)   NOT NULL CHECK (what IN ('end', 'share')),
    to_jid       VARCHAR(3071),
    chat_type    VARCHAR(10),
    http_status  INTEGER,
    bytes_sent   BIGINT,
    duration_ms  BIGINT,
    date_time    TIMESTAMPTZ   NOT NULL,
    chain_seq    BIGINT        NOT NULL,
    chain_prev   VARCHAR(64)   NOT NULL,
    chain_hash   VARCHAR(64)   NOT NULL
);
CREATE INDEX aft_log_amends_row ON aft_log_amends (aft_index, amend_id);
CREATE UNIQUE INDEX aft_log_amends_chain ON aft_log_amends (node, chain_seq);

CREATE TABLE log_checkpoints (
    node         VARCHAR(255)  NOT NULL,
    chain_seq    BIGINT        NOT NULL,
    day          DATE          NOT NULL,
    rows_seq     BIGINT        NOT NULL,
    rows_hash    VARCHAR(64)   NOT NULL,
    amends_seq   BIGINT        NOT NULL,
    amends_hash  VARCHAR(64)   NOT NULL,
    created      TIMESTAMPTZ   NOT NULL,
    public_key   VARCHAR(1024) NOT NULL DEFAULT '',
    signature    TEXT          NOT NULL DEFAULT '',
    chain_prev   VARCHAR(64)   NOT NULL,
    chain_hash   VARCHAR(64)   NOT NULL,
    PRIMARY KEY (node, chain_seq)
);
CREATE UNIQUE INDEX log_checkpoints_day ON log_checkpoints (node, day);

-- The canonical encoding: each field as `<length in bytes>:<text>;`, a NULL
-- as `~;`; integers in decimal, times as microseconds since 1970-01-01 UTC
-- in decimal. The first three fields are the record kind, the node and the
-- sequence number in the node's chain.
CREATE FUNCTION mftd_canon(v text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '~;' ELSE octet_length(v) || ':' || v || ';' END
$$;
CREATE FUNCTION mftd_canon_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT mftd_canon((extract(epoch FROM t) * 1000000)::bigint::text)
$$;

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

CREATE FUNCTION mftd_canon_checkpoint(c log_checkpoints) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT mftd_canon('checkpoint') || mftd_canon(c.node) || mftd_canon(c.chain_seq::text)
        || mftd_canon(to_char(c.day, 'YYYY-MM-DD')) || mftd_canon(c.rows_seq::text)
        || mftd_canon(c.rows_hash) || mftd_canon(c.amends_seq::text) || mftd_canon(c.amends_hash)
        || mftd_canon_time(c.created) || mftd_canon(c.public_key)
$$;

-- chain_hash of a record from its predecessor's hash and its encoding.
CREATE FUNCTION mftd_chain_hash(prev text, canon text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(prev || canon, 'UTF8')), 'hex')
$$;

-- Rows written before this migration are sealed into their node's chain
-- now, oldest first: the chain proves they were not changed after today,
-- not before.
DO $$
DECLARE
    r aft_log_rows;
    cur_node text := NULL;
    seq bigint := 0;
    prev text;
BEGIN
    FOR r IN SELECT * FROM aft_log_rows ORDER BY node, aft_index LOOP
        IF cur_node IS DISTINCT FROM r.node THEN
            cur_node := r.node;
            seq := 0;
            prev := repeat('0', 64);
        END IF;
        seq := seq + 1;
        r.chain_seq := seq;
        r.chain_prev := prev;
        r.chain_hash := mftd_chain_hash(prev, mftd_canon_row(r));
        UPDATE aft_log_rows SET chain_seq = r.chain_seq, chain_prev = r.chain_prev,
               chain_hash = r.chain_hash
         WHERE aft_index = r.aft_index;
        prev := r.chain_hash;
    END LOOP;
END
$$;
ALTER TABLE aft_log_rows ALTER COLUMN chain_seq SET NOT NULL;
ALTER TABLE aft_log_rows ALTER COLUMN chain_prev SET NOT NULL;
ALTER TABLE aft_log_rows ALTER COLUMN chain_hash SET NOT NULL;

-- What readers query: the AFT_LOG columns in their order, each row with the
-- latest amendment of each column that was amended.
CREATE VIEW aft_log AS
SELECT r.aft_index, r.jid,
       COALESCE((SELECT m.to_jid FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.to_jid IS NOT NULL
                 ORDER BY m.amend_id DESC LIMIT 1), r.to_jid)::varchar(3071) AS to_jid,
       r.method, r.filename, r.real_filename, r.file_type,
       COALESCE((SELECT m.chat_type FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.chat_type IS NOT NULL
                 ORDER BY m.amend_id DESC LIMIT 1), r.chat_type)::varchar(10) AS chat_type,
       r.file_server, r.file_path, r.file_size, r.date_time, r.sha256, r.content_type, r.node,
       r.client_address, r.user_agent,
       COALESCE((SELECT m.http_status FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.http_status IS NOT NULL
                 ORDER BY m.amend_id DESC LIMIT 1), r.http_status) AS http_status,
       COALESCE((SELECT m.bytes_sent FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.bytes_sent IS NOT NULL
                 ORDER BY m.amend_id DESC LIMIT 1), r.bytes_sent) AS bytes_sent,
       COALESCE((SELECT m.duration_ms FROM aft_log_amends m
                 WHERE m.aft_index = r.aft_index AND m.duration_ms IS NOT NULL
                 ORDER BY m.amend_id DESC LIMIT 1), r.duration_ms) AS duration_ms,
       r.scan_verdict, r.scan_detail
FROM aft_log_rows r;

-- A row inserted into the view by hand (the owner, a superuser, a Cisco-era
-- script; mftd's roles may not) is chained like mftd's own: after the head
-- of its node's chain, under the node's chain lock.
CREATE FUNCTION mftd_aft_log_insert() RETURNS trigger
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
CREATE TRIGGER aft_log_append_only INSTEAD OF UPDATE OR DELETE ON aft_log
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();

-- Append-only, whoever connects (as removals and hold_events since
-- migration 8); the runtime role also loses the column UPDATE it had on
-- aft_log for finishing rows in place.
CREATE TRIGGER aft_log_rows_append_only BEFORE UPDATE OR DELETE ON aft_log_rows
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER aft_log_rows_no_truncate BEFORE TRUNCATE ON aft_log_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER aft_log_amends_append_only BEFORE UPDATE OR DELETE ON aft_log_amends
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER aft_log_amends_no_truncate BEFORE TRUNCATE ON aft_log_amends
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER log_checkpoints_append_only BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER log_checkpoints_no_truncate BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER shares_append_only BEFORE UPDATE OR DELETE ON shares
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER shares_no_truncate BEFORE TRUNCATE ON shares
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();

DO $$
DECLARE
    who name;
BEGIN
    FOR who IN SELECT m.role FROM mftd_roles m JOIN pg_roles p ON p.rolname = m.role LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON aft_log_rows FROM %I', who);
    END LOOP;
END
$$;
