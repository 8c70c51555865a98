-- Users deleting their own uploads (XEP-0050 ad-hoc commands on the
-- component). Like an erasure, each deletion is crash-safe in three steps:
-- an `intent` row is committed while the file is still there, the file is
-- deleted from the store, then one transaction marks `files.deleted`,
-- writes the `removals` row (reason `user-deletion`, `removed_by` = the
-- user's bare JID) and a `done` step. `held` (a hold placed meanwhile kept
-- it) and `gone` (something else removed it first) also close an intent.
-- An `intent` with no later step for the same file is a deletion a crash
-- interrupted: `mftd run` finishes it at start. `requested_by` is the full
-- JID (the device) the command came from. Append-only, like `removals`.
CREATE TABLE user_deletions (
    step_id       BIGSERIAL     PRIMARY KEY,
    resource      VARCHAR(511)  NOT NULL,
    requested_by  VARCHAR(3071) NOT NULL,
    step          VARCHAR(16)   NOT NULL CHECK (step IN ('intent', 'done', 'held', 'gone')),
    db_user       VARCHAR(255)  NOT NULL DEFAULT session_user,
    at            TIMESTAMPTZ   NOT NULL DEFAULT now()
);
CREATE INDEX user_deletions_resource ON user_deletions (resource, step_id);
CREATE INDEX user_deletions_intents ON user_deletions (step_id) WHERE step = 'intent';

CREATE TRIGGER user_deletions_append_only BEFORE UPDATE OR DELETE ON user_deletions
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER user_deletions_no_truncate BEFORE TRUNCATE ON user_deletions
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
