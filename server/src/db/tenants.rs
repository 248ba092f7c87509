//! What each tenant's runs may be granted, stored with the tenant so that
//! every API process sees a change at once.

use sqlx::Row;

use super::{Db, DbError, GrantSet, db_err};

impl Db {
    /// Sets the labels a tenant's runs may be granted.
    pub async fn set_tenant_grants(
        &self,
        tenant_id: &str,
        grants: &GrantSet,
    ) -> Result<(), DbError> {
        let text = serde_json::to_string(grants).map_err(|e| DbError::Other(e.to_string()))?;
        sqlx::query("UPDATE tenants SET allowed_grants = $2 WHERE id = $1")
            .bind(tenant_id)
            .bind(text)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// The labels a tenant's runs may be granted (none for an unknown tenant).
    pub async fn tenant_grants(&self, tenant_id: &str) -> Result<GrantSet, DbError> {
        let row = sqlx::query("SELECT allowed_grants FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(GrantSet::default());
        };
        let text: String = row.try_get("allowed_grants").map_err(db_err)?;
        serde_json::from_str(&text)
            .map_err(|e| DbError::Other(format!("corrupt allowed_grants: {e}")))
    }

    /// The id of the tenant named `name`.
    pub async fn tenant_id(&self, name: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| r.try_get("id").map_err(db_err)).transpose()
    }
}
