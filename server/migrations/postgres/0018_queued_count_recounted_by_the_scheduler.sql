-- A tenant's queued count (migrations 0012 and 0017) trusted by the
-- insert, and counted again by the scheduler's pass instead (issue 12,
-- PostgreSQL).
--
-- Migration 0017's insert trigger counted the queue again whenever the
-- count said the tenant was past its `max_queued_runs`, so that a count
-- that drifted up could not refuse a run. But a refusal raises, and the
-- raise rolls the corrected count back with the insert: a tenant at its
-- quota paid a full count of its queue, under its row's lock, for every
-- run it was refused. At 10,000 queued runs that was 9.5 ms and 2,097
-- buffers a refusal, on the row that every submission and claim of the
-- tenant waits for (BENCHMARKS.md). Now:
--
-- - the insert refuses on the count alone, as SQLite's always has;
-- - `caisson_recount_queued(tenant)` counts a tenant's queue under its
--   row's lock and stores the count, in a transaction of its own, so the
--   correction stays. The scheduler's pass calls it, about once a second,
--   for each tenant whose count is at or past its quota (the only counts
--   that can refuse a run).
--
-- The count can still drift up only where a server of a version before
-- migration 0017 claims a run it has just submitted (it counts nothing
-- out); such a drift now refuses runs until the next pass, at most a
-- tick, where before it refused none.
CREATE OR REPLACE FUNCTION caisson_runs_inserted() RETURNS trigger AS $$
DECLARE
    added RECORD;
    queued BIGINT;
    quota BIGINT;
BEGIN
    -- Tenants in id order, so two inserts of runs of the same tenants
    -- lock their rows in the same order.
    FOR added IN SELECT tenant_id, COUNT(*) AS runs FROM inserted
        WHERE state = 'queued' GROUP BY tenant_id ORDER BY tenant_id
    LOOP
        UPDATE tenants SET queued_runs = queued_runs + added.runs WHERE id = added.tenant_id
            RETURNING queued_runs, max_queued_runs INTO queued, quota;
        -- The server reads this message back as its quota error.
        IF queued > quota THEN
            RAISE EXCEPTION 'caisson_quota max_queued_runs %', quota;
        END IF;
    END LOOP;
    PERFORM pg_notify('caisson_runs', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- Whether the tenant's stored count was wrong, and is now its queue's.
-- The row's lock comes first: each statement of a function takes a new
-- snapshot, so the count then sees every insert and claim that changed
-- the stored count before the lock was granted, and none can change
-- either until the commit.
CREATE FUNCTION caisson_recount_queued(tenant TEXT) RETURNS BOOLEAN AS $$
DECLARE
    queued BIGINT;
BEGIN
    PERFORM 1 FROM tenants WHERE id = tenant FOR UPDATE;
    SELECT COUNT(*) INTO queued FROM runs WHERE tenant_id = tenant AND state = 'queued';
    UPDATE tenants SET queued_runs = queued WHERE id = tenant AND queued_runs <> queued;
    RETURN FOUND;
END;
$$ LANGUAGE plpgsql;
