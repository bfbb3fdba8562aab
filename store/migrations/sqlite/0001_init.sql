-- sikkermail schema, SQLite flavour. Times are seconds since the epoch;
-- flags are 0/1 integers (the same types as the PostgreSQL flavour).
CREATE TABLE organisations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    cvr         TEXT NOT NULL,
    settings    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);

CREATE TABLE mailboxes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organisations(id),
    address     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, address)
);

CREATE TABLE private_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organisations(id),
    key_uid     TEXT NOT NULL UNIQUE,   -- associated data of the seal
    kek_id      TEXT NOT NULL,          -- which key-encryption key sealed it
    sealed      BLOB NOT NULL,          -- nonce || AES-256-GCM(PKCS#8 DER) || tag
    algorithm   TEXT NOT NULL,
    legacy      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE certificates (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id             INTEGER NOT NULL REFERENCES organisations(id),
    kind               TEXT NOT NULL,      -- root-ca, issuing-ca, organisation, user
    generation         TEXT NOT NULL,      -- OCES2, OCES3
    source             TEXT NOT NULL,      -- issued, imported, legacy
    status             TEXT NOT NULL,      -- active, revoked, superseded
    pem                TEXT NOT NULL,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial             TEXT NOT NULL,
    uuid               TEXT,
    email              TEXT,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    key_id             INTEGER REFERENCES private_keys(id),
    mailbox_id         INTEGER REFERENCES mailboxes(id),
    revoked_at         INTEGER,
    revocation_reason  TEXT,
    replaced_by        INTEGER REFERENCES certificates(id),
    created_at         INTEGER NOT NULL,
    UNIQUE (org_id, issuer, serial)
);

CREATE TABLE recipients (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL REFERENCES organisations(id),
    address      TEXT NOT NULL,
    cert_pem     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    subject      TEXT NOT NULL,
    not_after    INTEGER NOT NULL,
    source       TEXT NOT NULL,          -- imported, harvested
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    pinned       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (org_id, address, fingerprint)
);

CREATE TABLE ca_state (
    org_id          INTEGER PRIMARY KEY REFERENCES organisations(id),
    root_cert_id    INTEGER NOT NULL REFERENCES certificates(id),
    issuing_cert_id INTEGER NOT NULL REFERENCES certificates(id),
    crl_number      INTEGER NOT NULL DEFAULT 0,
    crl_der         BLOB,
    crl_updated_at  INTEGER
);

CREATE TABLE audit_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id   INTEGER REFERENCES organisations(id),
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    detail   TEXT NOT NULL
);

CREATE INDEX audit_events_org_at ON audit_events (org_id, at);
