-- Accounts that may send through the outbound listener with SMTP AUTH
-- (besides the trusted networks). Passwords as argon2id PHC strings.
CREATE TABLE smtp_users (
    org_id      BIGINT NOT NULL REFERENCES organisations(id),
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);
