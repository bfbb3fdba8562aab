-- What an operator alerts on (issue 21 §5), read by /metrics at scrape time
-- so that every node reports the same values.
--
-- delivery_hops: when mail was last handed over to each next hop, relay or
-- the Maildir, written in the transaction that records the attempt.
CREATE TABLE delivery_hops (
    org_id             BIGINT NOT NULL REFERENCES organisations(id),
    direction          TEXT NOT NULL,      -- inbound, outbound
    hop                TEXT NOT NULL,      -- host:port, or maildir
    last_delivered_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, direction, hop)
);

-- Quarantined recipients counted without reading every finished one.
CREATE INDEX queue_recipients_quarantined ON queue_recipients (message_id)
    WHERE state = 'quarantined';

-- Encrypted messages of a shared IMAP mailbox that no key opened, by
-- folder, UIDVALIDITY and UID, so that `mailbox decrypt` reports what is
-- still undecryptable after the checkpoint has passed them. A row goes
-- when the message is decrypted, expunged, or the UIDVALIDITY changes.
CREATE TABLE mailbox_undecryptable (
    org_id       BIGINT NOT NULL REFERENCES organisations(id),
    mailbox      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  BIGINT NOT NULL,
    uid          BIGINT NOT NULL,
    reason       TEXT NOT NULL,
    seen_at      BIGINT NOT NULL,
    PRIMARY KEY (org_id, mailbox, folder, uidvalidity, uid)
);
