-- Attempt limits (issue 20 §3): one limiter for every secret the product
-- checks, shared by every node. A row counts the attempts of one key
-- (a login name, a client address, a device, ...) in one scope until
-- window_end (seconds since the epoch); an attempt is taken (n + 1, only
-- while n < the scope's maximum) before the secret is checked and given
-- back when the secret was right. Keys are SHA-256 digests (hex): no
-- names or addresses in clear.
CREATE TABLE attempt_limits (
    scope        TEXT NOT NULL,
    lkey         TEXT NOT NULL,
    n            BIGINT NOT NULL,
    window_end   BIGINT NOT NULL,
    PRIMARY KEY (scope, lkey)
);
CREATE INDEX attempt_limits_window_end ON attempt_limits (window_end);

-- Device cookies of administrators (OWASP "device cookies"): after a
-- good login the client gets a random token bound to the name; an attempt
-- that carries one counts against that device only, so nobody hammering
-- the name or a shared address locks the administrator out. Kept by the
-- SHA-256 of the token.
CREATE TABLE admin_devices (
    token_hash   TEXT PRIMARY KEY,
    admin_name   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX admin_devices_expires_at ON admin_devices (expires_at);
