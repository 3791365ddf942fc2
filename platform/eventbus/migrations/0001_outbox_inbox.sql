-- The event bus's own tables, in schema `eventbus` of each service's database.

-- Events written in the same transaction as the state change they describe; the relay
-- publishes them and stamps published_at.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    -- Writing transaction: the relay only takes rows whose transaction is older than
    -- every transaction still running, so a late commit never overtakes an earlier one.
    writer_xid   xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id     uuid        NOT NULL,
    subject      text        NOT NULL,
    envelope     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Events a consumer has applied, written in the same transaction as the effect.
CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
