-- A tenant's runs in one state, newest first (`GET /v1/runs?state=...`,
-- what a dashboard or a client waiting for its runs polls), read from
-- an index in that order (issue 12, PostgreSQL). The listing walked
-- `runs_by_tenant` back from the newest run and filtered on the state, so
-- a poll for the few runs still queued or running read every run since
-- `since`: 2.8 ms for 4,000 runs, and the more runs a backlog held, the
-- longer each poll took, taking CPU from the claims that would clear it
-- (BENCHMARKS.md). The index it replaces, on `(tenant_id, state)`, is a
-- prefix of this one, so the counts of a tenant's running runs (the
-- claim, `caisson_claim_held`) are served as before, and a run still
-- enters one index for its state: no write costs more.
DROP INDEX runs_by_tenant_state;
CREATE INDEX runs_by_tenant_state ON runs (tenant_id, state, created_at, id);
