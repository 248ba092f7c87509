//! What each tenant's runs may be granted, stored with the tenant so that
//! every API process sees a change at once.

use caisson_host_api::Grants;
use sqlx::Row;

use super::db::{Db, DbKind, new_id, now_ms};
use super::error::DbError;
use super::query::built;
use crate::model::columns::JsonText;

/// Per-tenant limits, so that one tenant cannot crowd out the others.
/// They are keys of the tenant's `[tenants.NAME]` table; a tenant the
/// configuration does not name (one made through the admin API) gets the
/// defaults, which are also the database's column defaults (migration
/// 0004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantQuotas {
    /// Runs waiting to start (`queued`, retries waiting out their backoff
    /// included). A submission past it is refused with 429.
    #[sqlx(try_from = "i64")]
    pub max_queued_runs: u32,
    /// Runs executing at once, across every worker. Claims skip a tenant
    /// at its quota.
    #[sqlx(try_from = "i64")]
    pub max_running_runs: u32,
    /// Cron schedules. Creating one past it is refused with 429.
    #[sqlx(try_from = "i64")]
    pub max_schedules: u32,
}

impl Default for TenantQuotas {
    fn default() -> Self {
        TenantQuotas {
            max_queued_runs: 10_000,
            max_running_runs: 256,
            max_schedules: 1_000,
        }
    }
}

impl Db {
    /// Sets a tenant's quotas.
    pub async fn set_tenant_quotas(
        &self,
        tenant_id: &str,
        quotas: &TenantQuotas,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE tenants SET max_queued_runs = $2, max_running_runs = $3, max_schedules = $4 \
             WHERE id = $1",
        )
        .bind(tenant_id)
        .bind(i64::from(quotas.max_queued_runs))
        .bind(i64::from(quotas.max_running_runs))
        .bind(i64::from(quotas.max_schedules))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A tenant's quotas (the defaults for an unknown tenant).
    pub async fn tenant_quotas(&self, tenant_id: &str) -> Result<TenantQuotas, DbError> {
        let quotas = sqlx::query_as::<_, TenantQuotas>(
            "SELECT max_queued_runs, max_running_runs, max_schedules FROM tenants WHERE id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(quotas.unwrap_or_default())
    }

    /// PostgreSQL: counts again the queue of each tenant whose stored
    /// `queued_runs` is at or past its `max_queued_runs` (the only counts
    /// that refuse a run), and stores the count; returns how many were
    /// wrong. The insert trusts the stored count (migration 0018), which
    /// can drift up only under a server of a version before migration
    /// 0017, so the scheduler's pass calls this to bound how long such a
    /// drift refuses runs. Each tenant in a transaction of its own, so one
    /// tenant's count holds no other's lock. SQLite keeps its counts in its
    /// one writer's transactions, which no older server shares: nothing to
    /// do there.
    pub async fn recount_queued(&self) -> Result<u64, DbError> {
        if self.kind != DbKind::Postgres {
            return Ok(0);
        }
        let full = sqlx::query("SELECT id FROM tenants WHERE queued_runs >= max_queued_runs")
            .fetch_all(&self.pool)
            .await?;
        let mut wrong = 0;
        for row in full {
            let tenant: String = row.try_get("id")?;
            let corrected = sqlx::query("SELECT caisson_recount_queued($1) AS corrected")
                .bind(&tenant)
                .fetch_one(&self.pool)
                .await?;
            if corrected.try_get::<bool, _>("corrected")? {
                tracing::warn!(
                    tenant = %tenant,
                    "a tenant's stored count of queued runs had drifted from its queue; counted again"
                );
                wrong += 1;
            }
        }
        Ok(wrong)
    }

    /// [`DbError::QuotaExceeded`] unless `count_sql` (`$1`: the tenant,
    /// one column `n`) counts fewer than the quota's limit; called under
    /// [`Db::lock_tenant`], so the count stays true until `tx` ends.
    pub(super) async fn within_quota(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        tenant_id: &str,
        (quota, limit): (&'static str, i64),
        count_sql: &'static str,
    ) -> Result<(), DbError> {
        let row = sqlx::query(count_sql)
            .bind(tenant_id)
            .fetch_one(&mut **tx)
            .await?;
        let count: i64 = row.try_get("n")?;
        if count >= limit {
            return Err(DbError::QuotaExceeded { quota, limit });
        }
        Ok(())
    }

    /// Takes the tenant's row lock until `tx` ends (a no-op write: a row
    /// lock on PostgreSQL, the write lock on SQLite), so that counting the
    /// tenant's runs or schedules and acting on the count cannot interleave
    /// with another transaction doing the same. Returns the quota column
    /// `quota` as it is now.
    pub(super) async fn lock_tenant(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        tenant_id: &str,
        quota: &'static str,
    ) -> Result<i64, DbError> {
        // `quota` is one of our own column names, never caller input.
        debug_assert!(matches!(
            quota,
            "max_queued_runs" | "max_running_runs" | "max_schedules"
        ));
        let rows = sqlx::query(built(format!(
            "UPDATE tenants SET {quota} = {quota} WHERE id = $1 RETURNING {quota}"
        )))
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await?;
        match rows.first() {
            Some(row) => row.try_get(quota).map_err(DbError::from),
            None => Err(DbError::other(format!("no tenant {tenant_id}"))),
        }
    }
    /// Sets the labels a tenant's runs may be granted.
    pub async fn set_tenant_grants(&self, tenant_id: &str, grants: &Grants) -> Result<(), DbError> {
        let text = serde_json::to_string(grants).map_err(|e| DbError::Other(e.into()))?;
        sqlx::query("UPDATE tenants SET allowed_grants = $2 WHERE id = $1")
            .bind(tenant_id)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The labels a tenant's runs may be granted (none for an unknown tenant).
    pub async fn tenant_grants(&self, tenant_id: &str) -> Result<Grants, DbError> {
        let grants: Option<JsonText<Grants>> = sqlx::query_scalar::<_, JsonText<Grants>>(
            "SELECT allowed_grants FROM tenants WHERE id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(grants.map(Grants::from).unwrap_or_default())
    }

    /// The id of the tenant named `name`.
    pub async fn tenant_id(&self, name: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("id").map_err(DbError::from))
            .transpose()
    }
}

impl Db {
    /// The tenant named `name`, created if missing. Returns its id.
    pub async fn ensure_tenant(&self, name: &str) -> Result<String, DbError> {
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(new_id())
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        row.try_get("id").map_err(DbError::from)
    }

    /// `(id, name)` of every tenant.
    pub async fn list_tenants(&self) -> Result<Vec<(String, String)>, DbError> {
        Ok(
            sqlx::query_as::<_, (String, String)>("SELECT id, name FROM tenants ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
