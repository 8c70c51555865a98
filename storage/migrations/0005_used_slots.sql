-- A slot is used once, on any node, for good. A PUT claims its resource here
-- before it stores a byte; the claim stays after the upload (and after
-- retention or expiry retired the file), so a replayed token cannot store the
-- file again anywhere. An upload that stored nothing (refused, abandoned,
-- failed) releases its claim, so the client may retry the same slot.
CREATE TABLE used_slots (
    resource    VARCHAR(511) PRIMARY KEY,
    node        VARCHAR(255) NOT NULL,
    claimed_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);
