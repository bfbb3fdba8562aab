-- The durable mail queue: mail accepted by the SMTP gateway (before it
-- replied 250) until every recipient is delivered, failed or quarantined.
-- A message is active, held (never claimed) or done (kept until purged).
-- A delivery worker leases it (lease_owner, lease_until) while it works.
CREATE TABLE queue_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused
    org_id        BIGINT NOT NULL REFERENCES organisations(id),
    direction     TEXT NOT NULL,      -- inbound, outbound
    state         TEXT NOT NULL,      -- active, held, done
    mail_from     TEXT NOT NULL,      -- '' for the null reverse path <>
    envid         TEXT,               -- DSN ENVID
    ret           TEXT,               -- DSN RET: FULL, HDRS
    client        TEXT NOT NULL,      -- who handed it over (HELO, peer, TLS)
    body          BLOB NOT NULL,
    size          BIGINT NOT NULL,
    received_at   BIGINT NOT NULL,
    next_attempt  BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   BIGINT,
    note          TEXT,
    done_at       BIGINT,
    released      BIGINT NOT NULL DEFAULT 0   -- released from quarantine: deliver as it is
);

-- claim: active messages by due time.
CREATE INDEX queue_messages_due ON queue_messages (state, next_attempt);
CREATE INDEX queue_messages_org ON queue_messages (org_id, id);

CREATE TABLE queue_recipients (
    message_id  BIGINT NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    idx         BIGINT NOT NULL,      -- position in the envelope, from 0
    address     TEXT NOT NULL,
    notify      TEXT,                 -- DSN NOTIFY
    orcpt       TEXT,                 -- DSN ORCPT
    state       TEXT NOT NULL,        -- queued, delivered, failed, quarantined
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,                 -- text of the last outcome
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (message_id, idx)
);
