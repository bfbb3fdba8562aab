-- Queued bodies sealed at rest under the master key (AES-256-GCM, as
-- private keys are), in chunks of at most 1 MiB (queue_body_chunks), so that
-- neither the driver nor the database holds a second copy of a large body:
-- body_kek names the master key and body_chunks how many there are. A row
-- with body_kek NULL keeps a body stored in clear before this migration in
-- body (still read, sealed by the next rotation). The chunks are deleted
-- once every recipient is done (the row's metadata stays for keep_done).
ALTER TABLE queue_messages ADD COLUMN body_kek TEXT;
ALTER TABLE queue_messages ADD COLUMN body_chunks BIGINT NOT NULL DEFAULT 0;

CREATE TABLE queue_body_chunks (
    message_id  BIGINT NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,      -- from 0
    sealed      BYTEA NOT NULL,       -- nonce, ciphertext, tag
    PRIMARY KEY (message_id, seq)
);

-- The addresses an SMTP AUTH account may send as: comma-separated
-- addresses and @domains, lowercase; '' means its own name when that is an
-- address, else nothing.
ALTER TABLE smtp_users ADD COLUMN may_send_as TEXT NOT NULL DEFAULT '';
