-- The trace context of the transaction that wrote each event, beside the envelope, so the
-- relay sets the NATS headers without decoding every envelope.
ALTER TABLE outbox ADD COLUMN trace_context jsonb NOT NULL DEFAULT '{}';
