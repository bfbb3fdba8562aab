-- Shared IMAP mailboxes (issue 8).
--
-- mailbox_folders: per configured mailbox and folder, how far the
-- decryption has come (UIDVALIDITY and the highest UID finished: decrypted
-- and archived, left alone, or reported as undecryptable), and which
-- process works on the folder now (a lease, so `serve` on two nodes and a
-- `mailbox decrypt` command never process one folder at once).
CREATE TABLE mailbox_folders (
    org_id       BIGINT NOT NULL REFERENCES organisations(id),
    mailbox      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  BIGINT NOT NULL DEFAULT 0,
    last_uid     BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, mailbox, folder)
);

-- The IMAP password of a mailbox, sealed under the master key like a
-- private key (re-sealed by a master-key rotation).
CREATE TABLE mailbox_secrets (
    org_id      BIGINT NOT NULL REFERENCES organisations(id),
    mailbox     TEXT NOT NULL,
    secret_uid  TEXT NOT NULL,
    kek_id      TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, mailbox)
);
