-- Queued bodies sealed at rest under the master key (AES-256-GCM, as
-- private keys are): body_kek names the master key; NULL is a body stored
-- in clear before this migration (still read). A body is emptied once
-- every recipient is done (the row's metadata stays for keep_done).
ALTER TABLE queue_messages ADD COLUMN body_kek TEXT;

-- The addresses an SMTP AUTH account may send as: comma-separated
-- addresses and @domains, lowercase; '' means its own name when that is an
-- address, else nothing.
ALTER TABLE smtp_users ADD COLUMN may_send_as TEXT NOT NULL DEFAULT '';
