//! API tokens beyond lookup: the ones `caisson.toml` lists are kept in step
//! with the file, and a tenant's tokens can be listed (ids, never hashes).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::db::{Db, new_id, now_ms};
use super::error::DbError;
use crate::model::columns::Flag;

/// Where a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// A `[tenants.NAME] tokens` entry of `caisson.toml`.
    Config,
    /// Minted with `POST /v1/tenants/{name}/tokens`.
    Api,
}

impl TokenSource {
    fn as_str(self) -> &'static str {
        match self {
            TokenSource::Config => "config",
            TokenSource::Api => "api",
        }
    }
}

/// The stored name, as the `source` column is read: anything but
/// `config` is a token of the API's (the column's default).
impl From<String> for TokenSource {
    fn from(name: String) -> Self {
        match name.as_str() {
            "config" => TokenSource::Config,
            _ => TokenSource::Api,
        }
    }
}

/// A token as listed: its id and history, never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TokenRecord {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub source: TokenSource,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Db {
    /// Stores a token `caisson.toml` lists for a tenant, marked as the
    /// file's; returns its id. A token minted through the API and then
    /// written into the file becomes the file's: it lives as long as the
    /// file lists it. A revoked token stays revoked.
    pub async fn add_config_token(&self, tenant_id: &str, hash: &str) -> Result<String, DbError> {
        let id = self.add_token(tenant_id, hash, false).await?;
        sqlx::query("UPDATE api_tokens SET source = $2 WHERE id = $1")
            .bind(&id)
            .bind(TokenSource::Config.as_str())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Revokes every live token of the file's whose id is not in `listed`:
    /// removing a token from the file and restarting is how an operator
    /// revokes it. Returns how many were revoked.
    pub async fn revoke_config_tokens_except(
        &self,
        listed: &BTreeSet<String>,
    ) -> Result<u64, DbError> {
        let live =
            sqlx::query("SELECT id FROM api_tokens WHERE source = $1 AND revoked_at IS NULL")
                .bind(TokenSource::Config.as_str())
                .fetch_all(&self.pool)
                .await?;
        let mut revoked = 0;
        for row in live {
            let id: String = row.try_get("id")?;
            if !listed.contains(&id) && self.revoke_token(&id).await? {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Every token of a tenant, live and revoked, oldest first.
    pub async fn list_tokens(&self, tenant_id: &str) -> Result<Vec<TokenRecord>, DbError> {
        Ok(sqlx::query_as::<_, TokenRecord>(
            "SELECT id, source, created_at, revoked_at FROM api_tokens \
             WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Db {
    /// Stores a token hash for a tenant; idempotent on the hash. Returns the token id.
    ///
    /// A hash already stored for another tenant is a [`DbError::Conflict`];
    /// a revoked token stays revoked.
    pub async fn add_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        admin: bool,
    ) -> Result<String, DbError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, token_hash, admin, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(new_id())
        .bind(tenant_id)
        .bind(token_hash)
        .bind(i64::from(admin))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id, tenant_id FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_one(&self.pool)
            .await?;
        let owner: String = row.try_get("tenant_id")?;
        if owner != tenant_id {
            return Err(DbError::Conflict(
                "this token belongs to another tenant".into(),
            ));
        }
        row.try_get("id").map_err(DbError::from)
    }

    /// The tenant id and admin flag of a live (not revoked) token.
    pub async fn token(&self, token_hash: &str) -> Result<Option<(String, bool)>, DbError> {
        let rows = self
            .read(
                "SELECT tenant_id, admin FROM api_tokens \
                 WHERE token_hash = $1 AND revoked_at IS NULL",
                |q| q.bind(token_hash),
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let admin: Flag = row.try_get("admin")?;
        Ok(Some((row.try_get("tenant_id")?, admin.into())))
    }

    /// Revokes a token by id; true if it existed and was live.
    pub async fn revoke_token(&self, token_id: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(token_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
