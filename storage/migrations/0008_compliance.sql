-- Compliance: legal holds, and removals that say who and why.
--
-- A hold keeps files from every removal (retention, ephemeral expiry, an
-- operator's purge) until it is released. It names a user (as uploader,
-- intended recipient, or sender/recipient of a share), a room (as intended
-- recipient or share recipient), one file (its resource) or a content
-- (SHA-256, so every copy, past and future). `holds` has one row per hold;
-- `hold_events` is its history: placing and releasing are each one event,
-- and neither table ever loses a row.
CREATE TABLE holds (
    hold_id        BIGSERIAL     PRIMARY KEY,
    kind           VARCHAR(16)   NOT NULL CHECK (kind IN ('user', 'room', 'file', 'sha256')),
    subject        VARCHAR(3071) NOT NULL,
    reason         VARCHAR(1024) NOT NULL,
    placed_by      VARCHAR(3071) NOT NULL,
    placed_at      TIMESTAMPTZ   NOT NULL DEFAULT now(),
    released_by    VARCHAR(3071),
    released_at    TIMESTAMPTZ,
    release_reason VARCHAR(1024)
);
CREATE INDEX holds_active ON holds (kind, subject) WHERE released_at IS NULL;

CREATE TABLE hold_events (
    event_id  BIGSERIAL     PRIMARY KEY,
    hold_id   BIGINT        NOT NULL REFERENCES holds (hold_id),
    action    VARCHAR(16)   NOT NULL CHECK (action IN ('add', 'remove')),
    actor     VARCHAR(3071) NOT NULL,
    reason    VARCHAR(1024) NOT NULL,
    db_user   VARCHAR(255)  NOT NULL DEFAULT session_user,
    at        TIMESTAMPTZ   NOT NULL DEFAULT now()
);
CREATE INDEX hold_events_hold ON hold_events (hold_id, event_id);

-- Whether hold `h` covers file `f` (released or not: callers filter).
CREATE FUNCTION mftd_hold_covers(h holds, f files) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (h.kind = 'file' AND h.subject = f.resource)
        OR (h.kind = 'sha256' AND h.subject = f.sha256 AND f.sha256 <> '')
        OR (h.kind = 'user' AND h.subject = split_part(f.uploader, '/', 1))
        OR (h.kind IN ('user', 'room') AND h.subject = split_part(f.to_jid, '/', 1))
        OR (h.kind = 'user' AND EXISTS (
                SELECT 1 FROM shares s
                WHERE s.resource = f.resource AND split_part(s.sender, '/', 1) = h.subject))
        OR (h.kind IN ('user', 'room') AND EXISTS (
                SELECT 1 FROM shares s
                WHERE s.resource = f.resource AND split_part(s.recipient, '/', 1) = h.subject))
$$;

-- The holds in force on a file: "is this file kept, and why?"
CREATE FUNCTION mftd_file_holds(res VARCHAR) RETURNS SETOF holds
LANGUAGE sql STABLE AS $$
    SELECT h.* FROM holds h, files f
    WHERE f.resource = res AND h.released_at IS NULL AND mftd_hold_covers(h, f)
    ORDER BY h.hold_id
$$;

-- Who removed a file: an operator's name, `sweeper`, or a user's JID —
-- as wide as a JID. Why, in the operator's words, and whether the removal
-- went below the retention floor (an operator's `mftd purge --before-floor`).
ALTER TABLE removals ALTER COLUMN removed_by TYPE VARCHAR(3071);
ALTER TABLE removals ADD COLUMN note VARCHAR(1024) NOT NULL DEFAULT '';
ALTER TABLE removals ADD COLUMN before_floor BOOLEAN NOT NULL DEFAULT false;

-- The audit record is append-only. An administrator who must archive or
-- correct it disables the trigger on purpose (ALTER TABLE … DISABLE TRIGGER),
-- which PostgreSQL's own log records.
CREATE FUNCTION mftd_refuse_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mftd: % is an audit record; its rows are never changed or deleted (docs/compliance.md)', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER removals_append_only BEFORE UPDATE OR DELETE ON removals
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER removals_no_truncate BEFORE TRUNCATE ON removals
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER hold_events_append_only BEFORE UPDATE OR DELETE ON hold_events
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER hold_events_no_truncate BEFORE TRUNCATE ON hold_events
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER holds_kept BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER holds_no_truncate BEFORE TRUNCATE ON holds
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();

-- A hold changes once: when it is released. What it names, why and by whom
-- it was placed stay as they were.
CREATE FUNCTION mftd_hold_release_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.released_at IS NOT NULL
       OR NEW.hold_id <> OLD.hold_id OR NEW.kind <> OLD.kind OR NEW.subject <> OLD.subject
       OR NEW.reason <> OLD.reason OR NEW.placed_by <> OLD.placed_by
       OR NEW.placed_at <> OLD.placed_at OR NEW.released_at IS NULL THEN
        RAISE EXCEPTION 'mftd: a hold is only ever released, once (hold %)', OLD.hold_id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER holds_release_only BEFORE UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION mftd_hold_release_only();
