-- TaskKeeper's own copy of the users it may assign to, and the tasks.

-- Built only from the account bus; `version` is the account's, so an older event never
-- overwrites a newer one.
CREATE TABLE users (
    id         uuid        PRIMARY KEY,
    username   text        NOT NULL,
    role       text        NOT NULL,
    active     boolean     NOT NULL,
    -- Active and of an assignable role (worker, accountant), decided when applied.
    assignable boolean     NOT NULL,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_assignable ON users (id) WHERE assignable;

CREATE TABLE tasks (
    id          uuid        PRIMARY KEY,
    -- Short human number, also the keyset for paging.
    public_id   bigint      GENERATED ALWAYS AS IDENTITY,
    title       text        NOT NULL,
    -- Empty when none.
    jira_id     text        NOT NULL DEFAULT '',
    description text        NOT NULL DEFAULT '',
    -- No FK to users: the user copy is eventually consistent and never shrinks anyway.
    assignee_id uuid        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('open', 'done')),
    -- Bumped on every change (creation 1, each reassign, the completion); events carry it.
    sequence    bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    CONSTRAINT tasks_public_id_unique UNIQUE (public_id)
);
CREATE INDEX tasks_assignee ON tasks (assignee_id, public_id);
CREATE INDEX tasks_open ON tasks (public_id) WHERE status = 'open';
