-- eventwire sagas: the tables Saga uses. eventwire.saga.create_tables() creates the same;
-- this file is for teams with their own migration tool. PostgreSQL syntax; for SQLite use TEXT for TIMESTAMPTZ.

CREATE TABLE IF NOT EXISTS eventwire_saga (
    saga            VARCHAR(100) NOT NULL,
    saga_key        VARCHAR(255) NOT NULL,   -- the correlation key (an order id)
    state           TEXT         NOT NULL,   -- JSON of the saga's state dataclass
    timers          TEXT         NOT NULL,   -- JSON: armed timer -> {"id", "due_at_ms"}
    correlation_id  VARCHAR(200) NOT NULL,
    version         BIGINT       NOT NULL,   -- steps taken
    started_at      TIMESTAMPTZ  NOT NULL,
    updated_at      TIMESTAMPTZ  NOT NULL,
    finished_at     TIMESTAMPTZ,             -- pruned after the saga's retention
    PRIMARY KEY (saga, saga_key)
);
CREATE INDEX IF NOT EXISTS ix_eventwire_saga_finished_at ON eventwire_saga (finished_at);

-- Only with Saga(timers="table"): the timers the saga polls.
CREATE TABLE IF NOT EXISTS eventwire_saga_timers (
    saga       VARCHAR(100) NOT NULL,
    saga_key   VARCHAR(255) NOT NULL,
    timer      VARCHAR(100) NOT NULL,
    timer_id   VARCHAR(64)  NOT NULL,
    due_at     TIMESTAMPTZ  NOT NULL,
    PRIMARY KEY (saga, saga_key, timer)
);
CREATE INDEX IF NOT EXISTS ix_eventwire_saga_timers_due_at ON eventwire_saga_timers (saga, due_at);
