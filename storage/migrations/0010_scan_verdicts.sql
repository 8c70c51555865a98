-- What the malware scanner ([scan], ClamAV's clamd) said about each upload,
-- on its POST row: `clean`, `infected` (scan_detail: the signature name),
-- `unscanned` (scan_detail: why — scanner unreachable or timed out, larger
-- than scan.max_size, end-to-end encrypted), or '' where no scanner is
-- configured and on GET rows. A refused upload has a POST row (its
-- http_status says how it was refused) and no `files` row.
ALTER TABLE aft_log ADD COLUMN scan_verdict VARCHAR(16)  NOT NULL DEFAULT '';
ALTER TABLE aft_log ADD COLUMN scan_detail  VARCHAR(255) NOT NULL DEFAULT '';
CREATE INDEX aft_log_scan_flagged ON aft_log (date_time)
    WHERE scan_verdict IN ('infected', 'unscanned');
