-- A claim's check under its tenant's lock, and the attempt's row, in one
-- call (issue 12, PostgreSQL). The claim's `UPDATE` counted the tenant's
-- running runs in its own snapshot, so another worker may have claimed
-- for the same tenant meanwhile: the server then stamped the tenant (its
-- lock, and the round robin's `last_claim_at`), counted again under that
-- lock, undid the claim if it was one too many, and wrote the attempt's
-- row. That was three round trips after the claim's, each holding the
-- tenant's lock, which submissions and other claims wait for. Here they
-- are one. A PL/pgSQL function (volatile) takes a fresh snapshot for each
-- statement in it, so the count, taken after the lock, sees every claim
-- committed before the lock was had, as the server's own second statement
-- did. Returns whether the claim holds: false when it was undone.
CREATE FUNCTION caisson_claim_held(run TEXT, tenant TEXT, worker TEXT, claimed_at BIGINT)
RETURNS BOOLEAN AS $$
DECLARE
    quota BIGINT;
    running BIGINT;
BEGIN
    UPDATE tenants SET last_claim_at = claimed_at WHERE id = tenant
        RETURNING max_running_runs INTO quota;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no tenant %', tenant;
    END IF;
    SELECT COUNT(*) INTO running FROM runs WHERE tenant_id = tenant AND state = 'running';
    IF running > quota THEN
        -- Queued again as it was: `attempts` on the right-hand side is the
        -- value before this update.
        UPDATE runs SET state = 'queued', attempts = attempts - 1, worker_id = NULL,
            lease_until = NULL,
            started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END
            WHERE id = run;
        RETURN FALSE;
    END IF;
    -- An upsert: a row left by an attempt number being reused (never
    -- expected, as a release deletes its row) must not fail the claim.
    INSERT INTO run_attempts (run_id, attempt, worker_id, started_at, state)
        SELECT id, attempts, worker, claimed_at, 'running' FROM runs
        WHERE id = run AND state = 'running' AND worker_id = worker
        ON CONFLICT (run_id, attempt) DO UPDATE SET worker_id = EXCLUDED.worker_id,
            started_at = EXCLUDED.started_at, finished_at = NULL, state = 'running',
            error = NULL;
    RETURN TRUE;
END;
$$ LANGUAGE plpgsql;
