-- Revocation data fetched from the network (issue 9 §3): CRLs by their
-- distribution point URL, OCSP responses by the certificate they answer
-- for (issuer name hash, issuer key hash, serial). Public data, shared by
-- every node and every organisation; kept until next_update (seconds since
-- the epoch), after which it is fetched again.
CREATE TABLE revocation_cache (
    kind         TEXT NOT NULL,
    cache_key    TEXT NOT NULL,
    url          TEXT NOT NULL,
    body         BYTEA NOT NULL,
    fetched_at   BIGINT NOT NULL,
    next_update  BIGINT NOT NULL,
    PRIMARY KEY (kind, cache_key)
);
