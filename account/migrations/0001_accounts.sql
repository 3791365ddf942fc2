-- Users, their signing keys and their sessions.

CREATE TABLE accounts (
    id                uuid        PRIMARY KEY,
    username          text        NOT NULL,
    name              text        NOT NULL,
    surname           text        NOT NULL,
    email             text        NOT NULL,
    role              text        NOT NULL CHECK (role IN ('admin', 'manager', 'accountant', 'worker')),
    -- Grants on top of the role's default permissions.
    extra_permissions text[]      NOT NULL DEFAULT '{}',
    active            boolean     NOT NULL DEFAULT true,
    password_hash     text        NOT NULL,
    -- Bumped on every change; account events carry it so consumers drop stale ones.
    version           bigint      NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_username_unique UNIQUE (username)
);
CREATE UNIQUE INDEX accounts_email_unique ON accounts (lower(email));

-- Ed25519 signing keys. Every key not retired is published in the JWKS; the newest signs.
CREATE TABLE signing_keys (
    kid           text        PRIMARY KEY,
    private_pkcs8 bytea       NOT NULL,
    public_key    bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at    timestamptz
);

-- Refresh tokens, stored as SHA-256 hashes. Each login starts a family; each refresh
-- spends one token and adds the next. Presenting a spent token revokes the family.
CREATE TABLE refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    family_id  uuid        NOT NULL,
    account_id uuid        NOT NULL REFERENCES accounts (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_account ON refresh_tokens (account_id) WHERE revoked_at IS NULL;
