CREATE TABLE IF NOT EXISTS portcullis_api_keys (
    id             TEXT PRIMARY KEY NOT NULL,
    org_id         TEXT NOT NULL,
    name           TEXT NOT NULL,
    digest         BYTEA NOT NULL UNIQUE,
    secret_version BIGINT NOT NULL,
    start          TEXT NOT NULL,
    last4          TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    last_used_at   BIGINT
);
CREATE INDEX IF NOT EXISTS portcullis_api_keys_org ON portcullis_api_keys (org_id, created_at);
