-- Revocations of sessions, users and memberships, and what the webhook receiver remembers. The
-- same statements serve SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS portcullis_revocations (
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    org_id      TEXT NOT NULL DEFAULT '',
    not_before  BIGINT,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (kind, subject, org_id)
);
-- Bumped in every transaction that changes portcullis_revocations: what a polling replica
-- (SQLite) compares.
CREATE TABLE IF NOT EXISTS portcullis_revocation_version (
    id          INTEGER PRIMARY KEY,
    version     BIGINT NOT NULL
);
INSERT INTO portcullis_revocation_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS portcullis_memberships (
    user_id     TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    role        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, org_id)
);
CREATE TABLE IF NOT EXISTS portcullis_users_seen (
    user_id     TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    last_seen   BIGINT NOT NULL,
    PRIMARY KEY (user_id, org_id)
);
CREATE TABLE IF NOT EXISTS portcullis_webhook_messages (
    id          TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
