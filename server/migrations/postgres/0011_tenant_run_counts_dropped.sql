-- Migration 0010's per-tenant run counts, taken back out on PostgreSQL
-- (issue 12; SQLite keeps them). Its triggers updated the tenant's one row
-- on every submit, claim and finish, so every transaction that moved a run
-- held that row's lock until it committed: a tenant's submissions, claims
-- and finishes, from every process, ran one at a time, and the row piled
-- up a dead version per move. Sampled under load (BENCHMARKS.md), most
-- backends were waiting for that lock, the finishes among them. The
-- submission and the claim, the only ones that need a count, take the
-- tenant's lock anyway and count under it with COUNT(*) over the
-- `runs_by_tenant_state` index. On SQLite one writer at a time is the rule
-- already, so the hot row costs nothing there and its counts spare the scans.
DROP TRIGGER runs_count_insert ON runs;
DROP TRIGGER runs_count_update ON runs;
DROP TRIGGER runs_count_delete ON runs;
DROP FUNCTION caisson_count_runs();
ALTER TABLE tenants DROP COLUMN queued_runs;
ALTER TABLE tenants DROP COLUMN running_runs;
