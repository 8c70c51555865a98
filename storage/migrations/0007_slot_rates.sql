-- The per-user slot request limit ([limits] slots_per_minute, slot_burst)
-- held for the whole service, so N nodes do not give N times the rate: one
-- token bucket per bare JID, refilled and taken in one statement; `taken`
-- says whether the last request got a token.
CREATE TABLE slot_rates (
    jid      VARCHAR(3071)    PRIMARY KEY,
    tokens   DOUBLE PRECISION NOT NULL,
    updated  TIMESTAMPTZ      NOT NULL,
    taken    BOOLEAN          NOT NULL
);
