-- Signed drops: each chain run `mftd db prune-log` records in
-- log_drop_chains carries the checkpoint key's public half and its SSH
-- signature (namespace `mftd-log-checkpoint`) of the run's canonical
-- encoding, `mftd_canon_drop_run`. A database superuser who writes a drop
-- record to explain records they deleted cannot sign it: the key is on the
-- mftd host. `mftd verify --log`, given the public key, names every run
-- whose signature is missing or does not verify. Existing runs keep empty
-- values (unsigned).
ALTER TABLE log_drop_chains ADD COLUMN public_key TEXT NOT NULL DEFAULT '';
ALTER TABLE log_drop_chains ADD COLUMN signature  TEXT NOT NULL DEFAULT '';

-- The bytes a run's signature signs: its drop's table, partition and month
-- and the run itself, length-prefixed like the chain's records.
CREATE FUNCTION mftd_canon_drop_run(d log_drops, c log_drop_chains) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT mftd_canon('drop') || mftd_canon(c.node) || mftd_canon(c.from_seq::text)
        || mftd_canon(d.table_name) || mftd_canon(d.partition)
        || mftd_canon(to_char(d.month, 'YYYY-MM')) || mftd_canon(c.to_seq::text)
        || mftd_canon(c.records::text) || mftd_canon(c.last_hash) || mftd_canon(c.public_key)
$$;
