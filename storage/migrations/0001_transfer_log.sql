-- The transfer log keeps the columns of Cisco's AFT_LOG (all NOT NULL,
-- primary key AFT_INDEX) so existing compliance queries run unchanged; our
-- own columns follow them.
CREATE SEQUENCE IF NOT EXISTS aft_log_seq;

CREATE TABLE aft_log (
    aft_index      BIGINT        NOT NULL DEFAULT nextval('aft_log_seq') PRIMARY KEY,
    jid            VARCHAR(3071) NOT NULL,
    to_jid         VARCHAR(3071) NOT NULL,
    method         VARCHAR(63)   NOT NULL,
    filename       VARCHAR(511)  NOT NULL,
    real_filename  VARCHAR(511)  NOT NULL,
    file_type      VARCHAR(10)   NOT NULL,
    chat_type      VARCHAR(10)   NOT NULL,
    file_server    VARCHAR(511)  NOT NULL,
    file_path      VARCHAR(1023) NOT NULL,
    file_size      BIGINT        NOT NULL,
    date_time      TIMESTAMPTZ   NOT NULL,
    sha256         VARCHAR(64)   NOT NULL DEFAULT '',
    content_type   VARCHAR(255)  NOT NULL DEFAULT '',
    node           VARCHAR(255)  NOT NULL DEFAULT '',
    client_address VARCHAR(64)   NOT NULL DEFAULT '',
    user_agent     VARCHAR(511)  NOT NULL DEFAULT '',
    http_status    INTEGER       NOT NULL DEFAULT 0,
    bytes_sent     BIGINT        NOT NULL DEFAULT 0,
    duration_ms    BIGINT        NOT NULL DEFAULT 0
);
ALTER SEQUENCE aft_log_seq OWNED BY aft_log.aft_index;

-- "Who sent what when", "who received what", "who fetched this file".
CREATE INDEX aft_log_jid_time ON aft_log (jid, date_time);
CREATE INDEX aft_log_to_jid_time ON aft_log (to_jid, date_time);
CREATE INDEX aft_log_filename ON aft_log (filename, method);
CREATE INDEX aft_log_time ON aft_log (date_time);

-- What the HTTP side needs to serve and retire a file.
CREATE TABLE files (
    resource       VARCHAR(511)  PRIMARY KEY,
    storage_path   VARCHAR(1023) NOT NULL,
    file_server    VARCHAR(511)  NOT NULL,
    node           VARCHAR(255)  NOT NULL,
    size           BIGINT        NOT NULL,
    content_type   VARCHAR(255)  NOT NULL,
    sha256         VARCHAR(64)   NOT NULL,
    uploader       VARCHAR(3071) NOT NULL,
    to_jid         VARCHAR(3071) NOT NULL,
    chat_type      VARCHAR(10)   NOT NULL,
    real_filename  VARCHAR(511)  NOT NULL,
    created        TIMESTAMPTZ   NOT NULL,
    expires        TIMESTAMPTZ,
    deleted        TIMESTAMPTZ
);
CREATE INDEX files_live_created ON files (created) WHERE deleted IS NULL;
CREATE INDEX files_uploader_created ON files (uploader, created);
