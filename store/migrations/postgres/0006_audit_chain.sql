-- The audit trail as a hash chain: entry n stores seq = n, the hash of
-- entry n-1 and its own hash over both and its fields, so a changed,
-- removed or reordered entry breaks the chain (`sikkermail audit verify`).
-- Entries written before this migration are chained by the next write.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_seq ON audit_events (seq);
CREATE INDEX audit_events_unchained ON audit_events (id) WHERE seq IS NULL;
