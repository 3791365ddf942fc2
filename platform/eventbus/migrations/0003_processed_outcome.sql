-- What became of each event a consumer took. `applied`: its effects committed together
-- with this row. `dead`: refused for good and dead-lettered, nothing of it applied (the
-- handler's savepoint was rolled back). A redelivery or a replay skips an applied event
-- and applies a dead one again, turning its row applied in the same transaction.
-- Rows written before this migration say applied, those of dead events included: to
-- replay such a letter, set its row to 'dead' by hand first.
ALTER TABLE processed_events ADD COLUMN outcome text NOT NULL DEFAULT 'applied'
    CHECK (outcome IN ('applied', 'dead'));
