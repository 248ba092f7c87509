-- A batch claim's check once a tenant rather than once a run (issue 12,
-- PostgreSQL). `caisson_claim_held` (migration 0014), called for each
-- run a claim takes, stamped the tenant's row, counted its running runs
-- and wrote the attempt's row: for a claim of k runs of one tenant, k
-- updates of that row and k counts, about half of the claim's buffers
-- (BENCHMARKS.md). Here they are one update, one count and one insert a
-- tenant. `claimed` is the tenant's runs this claim took, in the
-- tenant's own order; when a race with another worker took the tenant
-- past its `max_running_runs`, the excess is undone from the end of that
-- order, as the per-run calls in reverse undid it. Returns the runs
-- undone. A PL/pgSQL function (volatile) takes a fresh snapshot for each
-- statement in it, so the count, taken after the lock, sees every claim
-- committed before the lock was had, and this claim's own runs.
-- `caisson_claim_held` stays, for workers of the version before this one
-- while they are being replaced.
CREATE FUNCTION caisson_claims_held(claimed TEXT[], tenant TEXT, worker TEXT, claimed_at BIGINT)
RETURNS TEXT[] AS $$
DECLARE
    quota BIGINT;
    running BIGINT;
    taken INT := COALESCE(cardinality(claimed), 0);
    excess INT;
    undone TEXT[] := '{}';
BEGIN
    UPDATE tenants SET last_claim_at = claimed_at WHERE id = tenant
        RETURNING max_running_runs INTO quota;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no tenant %', tenant;
    END IF;
    SELECT COUNT(*) INTO running FROM runs WHERE tenant_id = tenant AND state = 'running';
    excess := LEAST(GREATEST(running - quota, 0), taken);
    IF excess > 0 THEN
        undone := claimed[taken - excess + 1 : taken];
        -- Queued again as they were: `attempts` on the right-hand side is
        -- the value before this update.
        UPDATE runs SET state = 'queued', attempts = attempts - 1, worker_id = NULL,
            lease_until = NULL,
            started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END
            WHERE id = ANY (undone);
    END IF;
    -- An upsert: a row left by an attempt number being reused (never
    -- expected, as a release deletes its row) must not fail the claim.
    INSERT INTO run_attempts (run_id, attempt, worker_id, started_at, state)
        SELECT id, attempts, worker, claimed_at, 'running' FROM runs
        WHERE id = ANY (claimed) AND NOT (id = ANY (undone))
        AND state = 'running' AND worker_id = worker
        ON CONFLICT (run_id, attempt) DO UPDATE SET worker_id = EXCLUDED.worker_id,
            started_at = EXCLUDED.started_at, finished_at = NULL, state = 'running',
            error = NULL;
    RETURN undone;
END;
$$ LANGUAGE plpgsql;
