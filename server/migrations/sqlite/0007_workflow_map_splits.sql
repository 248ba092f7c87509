-- The `map` workflow step (issue 11): a fan-out over an object-store
-- prefix. When the step starts, the scheduler lists the prefix once and
-- stores one row per split here; each split runs as a run of its own, at
-- most the step's `parallelism` at a time. A split's run ending settles
-- its split in the same transaction, and the last one settles the step.
CREATE TABLE workflow_splits (
    workflow_run_id  TEXT NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    step_name        TEXT NOT NULL,
    -- 0-based; the order the dependent (reduce) step receives outputs in.
    split_index      BIGINT NOT NULL,
    -- The split as its run's input: JSON {"store", "objects": [...]}.
    input            TEXT NOT NULL,
    objects          BIGINT NOT NULL,
    bytes            BIGINT NOT NULL,
    -- pending | running | succeeded | failed | cancelled
    state            TEXT NOT NULL,
    run_id           TEXT,
    PRIMARY KEY (workflow_run_id, step_name, split_index)
);
-- A split's run ending finds its split by run id.
CREATE INDEX workflow_splits_run ON workflow_splits (run_id);

-- For a map step: how many splits it has, how many have not ended yet,
-- and how many failed. NULL for other steps.
ALTER TABLE workflow_steps ADD COLUMN splits BIGINT;
ALTER TABLE workflow_steps ADD COLUMN splits_open BIGINT;
ALTER TABLE workflow_steps ADD COLUMN splits_failed BIGINT;
-- Why a step failed without a run of its own to say so (a map step whose
-- listing failed or gave more splits than allowed).
ALTER TABLE workflow_steps ADD COLUMN error TEXT;
