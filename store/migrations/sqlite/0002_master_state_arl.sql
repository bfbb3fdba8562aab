-- Which master key seals new keys. A process that seals a key reads this
-- row inside its transaction (PostgreSQL: under a shared advisory lock that
-- rotation takes exclusively), so nothing is sealed under a master key that
-- a finished rotation has discarded, on any node.
CREATE TABLE master_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    kek_id      TEXT NOT NULL,
    rotated_at  BIGINT NOT NULL
);

-- The root CA's authority revocation list (the issuing CA's revocation).
ALTER TABLE ca_state ADD COLUMN arl_der BLOB;
ALTER TABLE ca_state ADD COLUMN arl_updated_at BIGINT;
