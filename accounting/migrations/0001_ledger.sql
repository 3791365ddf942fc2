-- Accounting: its own copy of the users, task prices, the immutable ledger, balances,
-- billing days and payout e-mails.

-- Built only from the account bus; `version` orders the events of one account.
CREATE TABLE users (
    id         uuid        PRIMARY KEY,
    username   text        NOT NULL,
    name       text        NOT NULL,
    email      text        NOT NULL,
    role       text        NOT NULL,
    active     boolean     NOT NULL,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per task ever seen, by whichever event came first. The prices are set by that
-- first insert (ON CONFLICT DO NOTHING) and never change.
CREATE TABLE tasks (
    id           uuid        PRIMARY KEY,
    fee_cents    bigint      NOT NULL CHECK (fee_cents BETWEEN 1000 AND 2000 AND fee_cents % 100 = 0),
    reward_cents bigint      NOT NULL CHECK (reward_cents BETWEEN 2000 AND 4000 AND reward_cents % 100 = 0),
    -- False while only a reassign chunk (which carries no text) has been seen.
    text_known   boolean     NOT NULL,
    public_id    text        NOT NULL DEFAULT '',
    jira_id      text        NOT NULL DEFAULT '',
    title        text        NOT NULL DEFAULT '',
    description  text        NOT NULL DEFAULT '',
    -- The newest assignment seen (highest sequence wins, whatever the arrival order).
    assignee_id  uuid,
    sequence     bigint      NOT NULL DEFAULT 0,
    completed    boolean     NOT NULL DEFAULT false,
    first_seen   timestamptz NOT NULL DEFAULT now()
);

-- The ledger (audit log). Money columns are never updated; only the task text of an
-- entry written before the task's text arrived is filled in later (text_known).
CREATE TABLE entries (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('assign_fee', 'completion_reward', 'payout')),
    amount      bigint      NOT NULL,
    -- The event leg that caused it: (event, task, kind); NULL for payouts.
    event_id    uuid,
    task_id     uuid,
    text_known  boolean     NOT NULL DEFAULT true,
    jira_id     text        NOT NULL DEFAULT '',
    title       text        NOT NULL DEFAULT '',
    description text        NOT NULL DEFAULT '',
    billing_day date        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entries_one_per_event_leg UNIQUE (event_id, task_id, kind),
    CHECK ((kind = 'payout') = (event_id IS NULL)),
    CHECK ((kind = 'assign_fee' AND amount < 0) OR (kind = 'completion_reward' AND amount > 0)
           OR (kind = 'payout' AND amount < 0))
);
-- A task is completed once, so it is rewarded once.
CREATE UNIQUE INDEX entries_one_reward_per_task ON entries (task_id) WHERE kind = 'completion_reward';
-- One payout per user per closed day.
CREATE UNIQUE INDEX entries_one_payout_per_day ON entries (user_id, billing_day) WHERE kind = 'payout';
CREATE INDEX entries_user_day ON entries (user_id, billing_day, id);
CREATE INDEX entries_day_kind ON entries (billing_day, kind);
CREATE INDEX entries_text_pending ON entries (task_id) WHERE NOT text_known;

-- Sum of each user's entries, kept in step in the entry's transaction; the row lock
-- orders appliers against the day close.
CREATE TABLE balances (
    user_id uuid   PRIMARY KEY,
    balance bigint NOT NULL
);
CREATE INDEX balances_positive ON balances (user_id) WHERE balance > 0;

-- The open billing day. Appliers read it FOR SHARE and the day close takes it FOR
-- UPDATE, so an entry is never written into a day while that day is being closed.
CREATE TABLE billing_state (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    open_day date    NOT NULL
);
INSERT INTO billing_state (open_day) VALUES ((now() AT TIME ZONE 'UTC')::date);

-- Every closed day, once.
CREATE TABLE billing_days (
    day        date        PRIMARY KEY,
    payouts    bigint      NOT NULL,
    paid_cents bigint      NOT NULL,
    closed_at  timestamptz NOT NULL DEFAULT now()
);

-- One e-mail per payout entry. new -> sending -> sent | failed (retried while
-- next_attempt_at is set); a row left in 'sending' by a crash is never resent on its own.
CREATE TABLE payout_mails (
    entry_id        bigint      PRIMARY KEY REFERENCES entries (id),
    user_id         uuid        NOT NULL,
    amount_cents    bigint      NOT NULL CHECK (amount_cents > 0),
    billing_day     date        NOT NULL,
    status          text        NOT NULL DEFAULT 'new'
                    CHECK (status IN ('new', 'sending', 'sent', 'failed')),
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX payout_mails_due ON payout_mails (next_attempt_at) WHERE status IN ('new', 'failed');
CREATE INDEX payout_mails_user ON payout_mails (user_id, entry_id);
