-- Run by the table's owner. The application writes through portcullis_audit_writer, which holds
-- only INSERT and SELECT; triggers refuse UPDATE, DELETE and TRUNCATE from anyone, the owner too.
SELECT pg_advisory_xact_lock(7305281771239117);

CREATE TABLE IF NOT EXISTS portcullis_audit_events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    time        TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    org_id      TEXT,
    actor_id    TEXT,
    sensitive   BOOLEAN NOT NULL,
    event       JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS portcullis_audit_events_org ON portcullis_audit_events (org_id, seq);

CREATE OR REPLACE FUNCTION portcullis_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'portcullis audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER IF EXISTS portcullis_audit_no_update_delete ON portcullis_audit_events;
CREATE TRIGGER portcullis_audit_no_update_delete
    BEFORE UPDATE OR DELETE ON portcullis_audit_events
    FOR EACH ROW EXECUTE FUNCTION portcullis_audit_append_only();
DROP TRIGGER IF EXISTS portcullis_audit_no_truncate ON portcullis_audit_events;
CREATE TRIGGER portcullis_audit_no_truncate
    BEFORE TRUNCATE ON portcullis_audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION portcullis_audit_append_only();

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'portcullis_audit_writer') THEN
        CREATE ROLE portcullis_audit_writer NOLOGIN;
    END IF;
END
$$;
REVOKE ALL ON portcullis_audit_events FROM PUBLIC;
REVOKE ALL ON portcullis_audit_events FROM portcullis_audit_writer;
GRANT INSERT, SELECT ON portcullis_audit_events TO portcullis_audit_writer;
GRANT USAGE ON SEQUENCE portcullis_audit_events_seq_seq TO portcullis_audit_writer;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO portcullis_audit_writer', current_schema());
END
$$;
