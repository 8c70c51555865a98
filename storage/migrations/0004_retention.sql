-- XEP-0363 1.2 purposes and retention. Every file records what it was
-- uploaded for; `expires` (already in `files`) holds an ephemeral file's
-- expire-before. Each removal by retention, expiry or an operator's purge
-- is recorded here for good: the aft_log history stays as it was.
ALTER TABLE files ADD COLUMN purpose VARCHAR(16) NOT NULL DEFAULT 'message';
CREATE INDEX files_live_expires ON files (expires) WHERE deleted IS NULL AND expires IS NOT NULL;
CREATE INDEX files_live_node_created ON files (node, created) WHERE deleted IS NULL;

CREATE TABLE removals (
    removal_id    BIGSERIAL     PRIMARY KEY,
    resource      VARCHAR(511)  NOT NULL,
    storage_path  VARCHAR(1023) NOT NULL,
    file_server   VARCHAR(511)  NOT NULL,
    node          VARCHAR(255)  NOT NULL,
    chat_type     VARCHAR(10)   NOT NULL,
    purpose       VARCHAR(16)   NOT NULL,
    size          BIGINT        NOT NULL,
    sha256        VARCHAR(64)   NOT NULL,
    created       TIMESTAMPTZ   NOT NULL,
    reason        VARCHAR(16)   NOT NULL,
    removed_by    VARCHAR(255)  NOT NULL,
    removed_at    TIMESTAMPTZ   NOT NULL DEFAULT now()
);
CREATE INDEX removals_resource ON removals (resource);
CREATE INDEX removals_time ON removals (removed_at);
