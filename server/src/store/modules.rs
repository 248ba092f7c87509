//! Module versions: name, version and digest per tenant; the bytes live
//! in the artifact store under the digest.

use std::sync::atomic::{AtomicU64, Ordering};

use caisson_host_api::Grants;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::db::Db;
use super::error::DbError;
use super::groups::{GroupRow, Grouped, RowValues, RowsStatement, RowsText};
use super::query::built;
use crate::model::columns::JsonText;

/// A stored module version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ModuleRecord {
    pub name: String,
    pub version: String,
    /// SHA-256 of the component, hex.
    pub digest: String,
    pub size: i64,
    pub created_at: i64,
}

const MODULE_COLUMNS: &str = "name, version, digest, size, created_at";

/// Which of the versions a reference matches it resolves to: the newest.
macro_rules! newest {
    () => {
        " ORDER BY created_at DESC, version DESC LIMIT 1"
    };
}

/// PostgreSQL: [`Db::resolve_module_and_grants`]'s read for several
/// references at once (`store::groups`), each a JSON row with its `id`,
/// returned as its answer's `id`; a reference no module matches returns
/// no row. `version` and `digest` match any when `null`.
static ADMISSION_ROWS: RowsStatement = RowsStatement {
    text: RowsText::Json(concat!(
        "SELECT q.id, m.name, m.version, m.digest, m.size, m.created_at, \
         (SELECT t.allowed_grants FROM tenants t WHERE t.id = q.tenant) AS allowed_grants \
         FROM jsonb_to_recordset($1::JSONB) AS q(id TEXT, tenant TEXT, name TEXT, version TEXT, digest TEXT) \
         CROSS JOIN LATERAL (SELECT name, version, digest, size, created_at FROM modules \
         WHERE tenant_id = q.tenant AND name = q.name \
         AND (q.version IS NULL OR version = q.version) AND (q.digest IS NULL OR digest = q.digest)",
        newest!(),
        ") m"
    )),
    // Concurrent submissions to one API process.
    max: 256,
};

/// The ids of this process's grouped admission reads, unique within a group.
static NEXT_ADMISSION: AtomicU64 = AtomicU64::new(0);

/// A module and its tenant's grants, as an admission's read returns them.
fn module_and_grants(row: &AnyRow) -> Result<(ModuleRecord, Grants), DbError> {
    let module = ModuleRecord::from_row(row)?;
    let grants: Option<JsonText<Grants>> = row.try_get("allowed_grants")?;
    Ok((module, grants.map(Grants::from).unwrap_or_default()))
}

impl Db {
    /// Records a module version. Re-recording the same (name, version,
    /// digest) is a no-op returning `false`; the same (name, version) with a
    /// different digest is `Conflict`.
    pub async fn insert_module(
        &self,
        tenant_id: &str,
        module: &ModuleRecord,
    ) -> Result<bool, DbError> {
        // A loop because the version may be deleted between the insert
        // that found it and the read: then the insert is tried again.
        loop {
            let done = sqlx::query(
                "INSERT INTO modules (tenant_id, name, version, digest, size, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, name, version) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(&module.name)
            .bind(&module.version)
            .bind(&module.digest)
            .bind(module.size)
            .bind(module.created_at)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() > 0 {
                return Ok(true);
            }
            let existing = self
                .resolve_module(tenant_id, &module.name, Some(&module.version), None)
                .await?;
            match existing {
                Some(existing) if existing.digest == module.digest => return Ok(false),
                Some(_) => {
                    return Err(DbError::Conflict(format!(
                        "module {}@{} already exists with another digest",
                        module.name, module.version
                    )));
                }
                None => continue,
            }
        }
    }

    /// Every module version of a tenant, by name then creation.
    pub async fn list_modules(&self, tenant_id: &str) -> Result<Vec<ModuleRecord>, DbError> {
        let sql = format!(
            "SELECT {MODULE_COLUMNS} FROM modules WHERE tenant_id = $1 ORDER BY name, created_at, version"
        );
        Ok(sqlx::query_as::<_, ModuleRecord>(built(sql))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The versions of one module, newest first.
    pub async fn module_versions(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Vec<ModuleRecord>, DbError> {
        let sql = format!(
            "SELECT {MODULE_COLUMNS} FROM modules WHERE tenant_id = $1 AND name = $2 \
             ORDER BY created_at DESC, version DESC"
        );
        Ok(sqlx::query_as::<_, ModuleRecord>(built(sql))
            .bind(tenant_id)
            .bind(name)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Resolves a module reference: a version, a digest, or (neither) the newest version.
    ///
    /// With both, the version must have that digest. A digest shared by
    /// several versions resolves to the newest of them.
    pub async fn resolve_module(
        &self,
        tenant_id: &str,
        name: &str,
        version: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Option<ModuleRecord>, DbError> {
        // The grants' subquery is one primary-key probe: one query text
        // serves both.
        let resolved = self
            .resolve_module_and_grants(tenant_id, name, version, digest)
            .await?;
        Ok(resolved.map(|(module, _)| module))
    }

    /// [`Db::resolve_module`], and in the same statement the labels the
    /// tenant's runs may be granted ([`Db::tenant_grants`]): what admitting
    /// a run reads, in one round trip instead of two. On PostgreSQL the
    /// reads that arrive while another is in flight go together
    /// (`ADMISSION_ROWS`, `store::groups`): one statement, trip and
    /// connection for them all, where each took its own.
    pub async fn resolve_module_and_grants(
        &self,
        tenant_id: &str,
        name: &str,
        version: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Option<(ModuleRecord, Grants)>, DbError> {
        if let Some(admissions) = &self.admissions {
            let id = NEXT_ADMISSION.fetch_add(1, Ordering::Relaxed).to_string();
            let row = GroupRow {
                id: id.clone(),
                // Not returned: no such module.
                may_skip: true,
                values: RowValues::Json(serde_json::json!({
                    "id": id,
                    "tenant": tenant_id,
                    "name": name,
                    "version": version,
                    "digest": digest,
                })),
            };
            match admissions.write(&self.pool, &ADMISSION_ROWS, row).await {
                Some(Grouped::Returned(row)) => return module_and_grants(&row).map(Some),
                Some(Grouped::Skipped) => return Ok(None),
                Some(Grouped::Failed(e)) => return Err(e),
                // The group failed as a whole, or was cut short: a read
                // can simply be made again, alone.
                Some(Grouped::Alone) | None => {}
            }
        }
        let mut sql = format!(
            "SELECT {MODULE_COLUMNS}, \
             (SELECT t.allowed_grants FROM tenants t WHERE t.id = $1) AS allowed_grants \
             FROM modules WHERE tenant_id = $1 AND name = $2"
        );
        let mut binds = Vec::new();
        if let Some(version) = version {
            binds.push(version);
            sql.push_str(&format!(" AND version = ${}", binds.len() + 2));
        }
        if let Some(digest) = digest {
            binds.push(digest);
            sql.push_str(&format!(" AND digest = ${}", binds.len() + 2));
        }
        sql.push_str(newest!());
        let rows = self
            .read(sql, |mut query| {
                query = query.bind(tenant_id).bind(name);
                for b in binds {
                    query = query.bind(b);
                }
                query
            })
            .await?;
        rows.first().map(module_and_grants).transpose()
    }

    /// Deletes one version, or every version when `version` is `None`.
    /// Returns the number deleted.
    pub async fn delete_module(
        &self,
        tenant_id: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<u64, DbError> {
        let done = match version {
            Some(version) => {
                sqlx::query(
                    "DELETE FROM modules WHERE tenant_id = $1 AND name = $2 AND version = $3",
                )
                .bind(tenant_id)
                .bind(name)
                .bind(version)
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query("DELETE FROM modules WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant_id)
                    .bind(name)
                    .execute(&self.pool)
                    .await
            }
        };
        Ok(done?.rows_affected())
    }

    /// Whether any tenant still has a module with this digest (so its bytes must stay).
    pub async fn digest_in_use(&self, digest: &str) -> Result<bool, DbError> {
        let row = sqlx::query("SELECT 1 AS one FROM modules WHERE digest = $1 LIMIT 1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}
