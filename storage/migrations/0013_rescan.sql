-- What `mftd verify --rescan` found in a stored file with the scanner's
-- current signatures. A file found infected is quarantined: never served
-- again (GET answers 403 and logs the attempt), its bytes moved to
-- `quarantine/<path>`, removed, or — under a legal hold — left in place,
-- per `[scan] quarantine` (`quarantined_to` says where they are now: '' when
-- removed). The upload's own verdict stays on its POST row in aft_log.
ALTER TABLE files ADD COLUMN quarantined    TIMESTAMPTZ;
ALTER TABLE files ADD COLUMN quarantined_to VARCHAR(1023) NOT NULL DEFAULT '';
-- The latest verdict recorded on the file: `infected`; scan_detail the
-- signature name; scan_source `rescan`; scanned_at when.
ALTER TABLE files ADD COLUMN scan_verdict   VARCHAR(16)   NOT NULL DEFAULT '';
ALTER TABLE files ADD COLUMN scan_detail    VARCHAR(255)  NOT NULL DEFAULT '';
ALTER TABLE files ADD COLUMN scan_source    VARCHAR(16)   NOT NULL DEFAULT '';
ALTER TABLE files ADD COLUMN scanned_at     TIMESTAMPTZ;
