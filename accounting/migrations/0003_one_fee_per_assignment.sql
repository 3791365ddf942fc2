-- The ledger is idempotent on the business key too, whatever the event ids: an
-- assignment (a task at one sequence) is charged one fee, even when the same assignment
-- is published again under a new event id. (One reward per task is
-- entries_one_reward_per_task.) Entries written before this have no sequence and are
-- left as they are.
ALTER TABLE entries ADD COLUMN sequence bigint;
CREATE UNIQUE INDEX entries_one_fee_per_assignment ON entries (task_id, sequence)
    WHERE kind = 'assign_fee' AND sequence IS NOT NULL;
