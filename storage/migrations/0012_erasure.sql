-- Audited erasure (`mftd erase`): a person's files are removed from the
-- store while the record of each transfer stays. Everything here is
-- append-only: an erasure is one `erasures` row, and each file it touches
-- gets steps in `erasure_steps` — `intent` (committed before the file is
-- deleted from the store), then `done` (in the same transaction as the
-- file's `removals` row and `files.deleted`), or `held` (a legal hold kept
-- it), or `gone` (something else removed it first). An `intent` without a
-- later step is an erasure a crash interrupted; the next `mftd erase` or
-- `mftd run` finishes it. `aft_log` is never updated: "erased" is the
-- removal with reason `erasure`, and `aft_log_erasures` joins the two.
CREATE TABLE erasures (
    erasure_id    BIGSERIAL     PRIMARY KEY,
    subject       VARCHAR(3071) NOT NULL,
    received      BOOLEAN       NOT NULL,
    reason        VARCHAR(1024) NOT NULL,
    requested_by  VARCHAR(3071) NOT NULL,
    db_user       VARCHAR(255)  NOT NULL DEFAULT session_user,
    started_at    TIMESTAMPTZ   NOT NULL DEFAULT now()
);

CREATE TABLE erasure_steps (
    step_id     BIGSERIAL     PRIMARY KEY,
    erasure_id  BIGINT        NOT NULL REFERENCES erasures (erasure_id),
    resource    VARCHAR(511)  NOT NULL,
    step        VARCHAR(16)   NOT NULL CHECK (step IN ('intent', 'done', 'held', 'gone')),
    at          TIMESTAMPTZ   NOT NULL DEFAULT now()
);
CREATE INDEX erasure_steps_resource ON erasure_steps (resource, step_id);
CREATE INDEX erasure_steps_erasure ON erasure_steps (erasure_id, step_id);

CREATE TRIGGER erasures_append_only BEFORE UPDATE OR DELETE ON erasures
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER erasures_no_truncate BEFORE TRUNCATE ON erasures
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER erasure_steps_append_only BEFORE UPDATE OR DELETE ON erasure_steps
    FOR EACH ROW EXECUTE FUNCTION mftd_refuse_rewrite();
CREATE TRIGGER erasure_steps_no_truncate BEFORE TRUNCATE ON erasure_steps
    FOR EACH STATEMENT EXECUTE FUNCTION mftd_refuse_rewrite();

-- Every log row of an erased file, with when, by whom and why it was
-- erased: the transfer record stays, and says the content is gone.
CREATE VIEW aft_log_erasures AS
    SELECT a.aft_index, a.method, a.jid, a.filename, a.date_time,
           r.removed_at AS erased_at, r.removed_by AS erased_by, r.note AS erasure_reason
    FROM aft_log a JOIN removals r ON r.resource = a.filename AND r.reason = 'erasure';
