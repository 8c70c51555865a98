-- The roles `mftd db migrate --grant-to ROLE --auditor ROLE` grants to: the
-- role mftd runs as (reads and appends, never DDL, never DELETE or UPDATE of
-- an aft_log row's history) and read-only auditors. Every later
-- `mftd db migrate` grants again on what it created, so a new table is never
-- out of the runtime role's reach after an upgrade.
CREATE TABLE mftd_roles (
    role        NAME         PRIMARY KEY,
    kind        VARCHAR(16)  NOT NULL CHECK (kind IN ('runtime', 'auditor')),
    granted_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);
