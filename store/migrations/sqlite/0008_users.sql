-- Organisations applied for through the admin API wait for their
-- ledelsesrepræsentant's approval ('pending'); those made by `init` are
-- 'active'. Administrators log in by name alone, so names are unique in
-- the installation.
ALTER TABLE organisations ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE organisations ADD COLUMN representative_name TEXT;
ALTER TABLE organisations ADD COLUMN representative_email TEXT;
CREATE UNIQUE INDEX admins_name_unique ON admins (name);

-- The organisation's users (employees), as imported from NemID
-- medarbejdersignatur or requested by themselves. The CPR number only as a
-- keyed hash; the password set at activation and the activation code only
-- as argon2id hashes.
CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         INTEGER NOT NULL REFERENCES organisations(id),
    name           TEXT NOT NULL,
    email          TEXT NOT NULL,
    rid            TEXT,
    cpr_hash       TEXT,
    birth_date     TEXT,
    rights         TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL,
    ident_means    TEXT,
    password_hash  TEXT,
    code_hash      TEXT,
    code_failures  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (org_id, email)
);
CREATE INDEX users_org_status ON users (org_id, status);

-- Single-use links sent by e-mail or printed (bootstrap, approval,
-- activation, certificate), by the SHA-256 of their token.
CREATE TABLE link_tokens (
    token_hash  TEXT PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organisations(id),
    user_id     INTEGER REFERENCES users(id),
    purpose     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX link_tokens_user ON link_tokens (user_id, purpose);

-- Which user a brugercertifikat was issued to.
ALTER TABLE certificates ADD COLUMN user_id INTEGER REFERENCES users(id);
