-- Slots granted and not yet used count against the quotas until they expire,
-- so asking for many slots at once cannot outrun a quota. The row goes away
-- in the transaction that logs the upload, or is swept once expired.
CREATE TABLE slot_reservations (
    resource  VARCHAR(511)  PRIMARY KEY,
    uploader  VARCHAR(3071) NOT NULL,
    size      BIGINT        NOT NULL,
    expires   TIMESTAMPTZ   NOT NULL
);
CREATE INDEX slot_reservations_uploader ON slot_reservations (uploader);
CREATE INDEX slot_reservations_expires ON slot_reservations (expires);
