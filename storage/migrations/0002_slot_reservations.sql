-- Slots granted and not yet used count against the quotas until they expire,
-- so asking for many slots at once cannot outrun a quota. Once the upload is
-- logged the quota counts its files row instead (reservations whose resource
-- is in files are skipped); rows are swept an hour after they expire.
CREATE TABLE slot_reservations (
    resource  VARCHAR(511)  PRIMARY KEY,
    uploader  VARCHAR(3071) NOT NULL,
    size      BIGINT        NOT NULL,
    expires   TIMESTAMPTZ   NOT NULL
);
CREATE INDEX slot_reservations_uploader ON slot_reservations (uploader);
CREATE INDEX slot_reservations_expires ON slot_reservations (expires);
