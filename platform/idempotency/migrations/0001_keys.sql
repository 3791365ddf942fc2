-- Idempotency keys, in schema `idempotency` of each service's database: one row per
-- (caller, RPC, key), written in the transaction of the work it guards.
CREATE TABLE keys (
    caller       uuid        NOT NULL,
    rpc          text        NOT NULL,
    key          text        NOT NULL,
    -- SHA-256 of the request message: the same key with another request is refused.
    request_hash bytea       NOT NULL,
    -- What the first call made (a task or account id); NULL until its transaction
    -- finishes the work.
    result       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, rpc, key)
);
CREATE INDEX keys_created ON keys (created_at);
