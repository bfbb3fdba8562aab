-- Administrators of the admin API (organisation administrator, user
-- administrator, auditor) and their sessions. Passwords as argon2id PHC
-- strings; sessions by the SHA-256 of their token, never the token.
CREATE TABLE admins (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organisations(id),
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('org-admin', 'user-admin', 'auditor')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (org_id, name)
);

CREATE TABLE admin_sessions (
    token_hash  TEXT PRIMARY KEY,
    admin_id    INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);
