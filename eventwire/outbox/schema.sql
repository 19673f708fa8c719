-- eventwire transactional outbox: the tables Outbox and OutboxRelay use.
-- Outbox.create_tables() creates the same; this file is for teams with their own migration tool.
-- PostgreSQL syntax; for SQLite use BLOB for BYTEA and TEXT for TIMESTAMPTZ.

CREATE TABLE IF NOT EXISTS eventwire_outbox (
    id          VARCHAR(200) PRIMARY KEY,     -- Nats-Msg-Id of the event
    event_key   VARCHAR(255) NOT NULL,        -- ce-subject, or id when the event has no key
    key_seq     BIGINT       NOT NULL,        -- order within the key, equal to commit order
    subject     VARCHAR(255) NOT NULL,        -- NATS subject
    headers     TEXT         NOT NULL,        -- JSON object of NATS headers
    payload     BYTEA        NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL,
    sent_at     TIMESTAMPTZ                   -- NULL until JetStream acknowledged it
);
CREATE INDEX IF NOT EXISTS ix_eventwire_outbox_pending ON eventwire_outbox (event_key, key_seq) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_eventwire_outbox_sent_at ON eventwire_outbox (sent_at);

CREATE TABLE IF NOT EXISTS eventwire_outbox_keys (
    event_key   VARCHAR(255) PRIMARY KEY,
    last_seq    BIGINT       NOT NULL
);
