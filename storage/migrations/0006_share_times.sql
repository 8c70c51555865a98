-- A router module that could not reach mftd queues its share reports and
-- delivers them later with the message's own time: `date_time` is when the
-- message was sent (the report's stamp, else when it arrived) and
-- `reported_at` when mftd recorded it.
ALTER TABLE shares ADD COLUMN reported_at TIMESTAMPTZ NOT NULL DEFAULT now();
