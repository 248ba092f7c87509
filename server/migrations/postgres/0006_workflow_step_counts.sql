-- The event-driven workflow advance (issue 12). When a step's run ends,
-- the transaction that records it also counts its successors down, so the
-- ones whose every dependency has ended start at once, without a pass
-- over the whole workflow. NULL in runs started before this migration:
-- those move only by the scheduler's periodic pass, as they did.
--
-- How many of the step's dependencies have not ended yet.
ALTER TABLE workflow_steps ADD COLUMN waiting BIGINT;
-- The steps that depend on this one, as a JSON array of names.
ALTER TABLE workflow_steps ADD COLUMN successors TEXT;
-- How many of the run's steps have not ended yet.
ALTER TABLE workflow_runs ADD COLUMN open_steps BIGINT;
