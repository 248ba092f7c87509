-- Fairness between tenants. The quotas come from `[tenants.NAME]` in
-- caisson.toml (written at start-up); these defaults are
-- `TenantQuotas::default()`, for tenants the configuration does not name.
ALTER TABLE tenants ADD COLUMN max_queued_runs BIGINT NOT NULL DEFAULT 10000;
ALTER TABLE tenants ADD COLUMN max_running_runs BIGINT NOT NULL DEFAULT 256;
ALTER TABLE tenants ADD COLUMN max_schedules BIGINT NOT NULL DEFAULT 1000;
-- When a worker last started one of this tenant's runs: among tenants with
-- as many runs running, the one served longest ago goes first.
ALTER TABLE tenants ADD COLUMN last_claim_at BIGINT NOT NULL DEFAULT 0;
-- Counting a tenant's queued and running runs (quotas, fair claims).
CREATE INDEX runs_by_tenant_state ON runs (tenant_id, state);
