//! [`AppState`], what every handler shares, and [`Caller`], who is asking.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use caisson_host_api::Grants;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::streams::StreamCounts;
use crate::config::DEFAULT_TENANT;
use crate::services::Services;

/// What every handler shares: the services, and what only the API keeps.
pub struct AppState {
    pub services: Services,
    /// The tenant id that owns everything in open (token-less) mode.
    pub default_tenant: String,
    /// Live log streams per tenant id, capped at `[server] max_log_streams`.
    pub(crate) log_streams: StreamCounts,
    /// The ids of the tokens the configuration lists.
    config_tokens: BTreeSet<String>,
}

/// The caller, as its bearer token says.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    pub admin: bool,
    /// The SHA-256 of a stored token, which can be revoked while a
    /// long-lived response (a followed log) is still being sent. `None` in
    /// open mode and for the configured admin token.
    pub token_hash: Option<String>,
}

/// SHA-256 hex of a token: how tokens are stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time that depends only on their lengths.
/// Callers compare SHA-256 digests, whose length is fixed, so the time
/// says nothing about the presented token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if state.services.config.open_access() {
            return Ok(Caller {
                tenant_id: state.default_tenant.clone(),
                admin: true,
                token_hash: None,
            });
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let hash = hash_token(token);
        if let Some(admin) = &state.services.config.server.admin_token
            && constant_time_eq(hash.as_bytes(), hash_token(admin).as_bytes())
        {
            return Ok(Caller {
                tenant_id: state.default_tenant.clone(),
                admin: true,
                token_hash: None,
            });
        }
        match state.services.db.token(&hash).await? {
            Some((tenant_id, admin)) => Ok(Caller {
                tenant_id,
                admin,
                token_hash: Some(hash),
            }),
            None => Err(ApiError::unauthorized()),
        }
    }
}

impl AppState {
    /// Sets up tenants and tokens from the configuration: the API owns
    /// them, so only a process that serves it does this.
    pub async fn new(services: Services) -> Result<Self, crate::store::DbError> {
        let db = &services.db;
        let config = &services.config;
        let default_tenant = db.ensure_tenant(DEFAULT_TENANT).await?;
        // In open mode the one tenant may use every configured label.
        if config.open_access() {
            let everything = Grants {
                objects: config.runtime.objects.keys().cloned().collect(),
                sql: config.runtime.sql.keys().cloned().collect(),
            };
            db.set_tenant_grants(&default_tenant, &everything).await?;
        }
        // The configuration is the source of truth for the tenants it
        // names; tenants made through the admin API keep what was set there.
        let mut config_tokens = BTreeSet::new();
        // The default tenant always exists, so its quotas are always the
        // configuration's: `[tenants.default]`'s, or the defaults.
        let default_quotas = config
            .tenants
            .get(DEFAULT_TENANT)
            .map(|t| t.quotas())
            .unwrap_or_default();
        db.set_tenant_quotas(&default_tenant, &default_quotas)
            .await?;
        for (name, tenant) in &config.tenants {
            let id = db.ensure_tenant(name).await?;
            for token in &tenant.tokens {
                config_tokens.insert(db.add_config_token(&id, &hash_token(token)).await?);
            }
            // In open mode the default tenant keeps every label: a
            // `[tenants.default]` table there sets its quotas only.
            if !(config.open_access() && name == DEFAULT_TENANT) {
                db.set_tenant_grants(&id, &tenant.allowed()).await?;
            }
            db.set_tenant_quotas(&id, &tenant.quotas()).await?;
        }
        Ok(AppState {
            services,
            default_tenant,
            log_streams: Default::default(),
            config_tokens,
        })
    }

    /// Revokes the tokens a configuration file once listed and this one
    /// does not, so that deleting a token from the file and restarting
    /// revokes it. `serve()` calls this for a process that serves the API
    /// with tokens configured: never for a worker or an open-mode server,
    /// which may run with no file at all against a shared database.
    pub async fn revoke_unlisted_config_tokens(&self) -> Result<u64, crate::store::DbError> {
        let revoked = self
            .services
            .db
            .revoke_config_tokens_except(&self.config_tokens)
            .await?;
        if revoked > 0 {
            tracing::info!("revoked {revoked} token(s) no longer listed in the configuration");
        }
        Ok(revoked)
    }

    /// The labels `tenant_id`'s runs may be granted.
    pub async fn allowed_grants(&self, tenant_id: &str) -> Result<Grants, crate::store::DbError> {
        self.services.db.tenant_grants(tenant_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest_in_constant_time() {
        let admin = hash_token("admin-token");
        assert!(constant_time_eq(
            hash_token("admin-token").as_bytes(),
            admin.as_bytes()
        ));
        for wrong in ["admin-toke", "admin-tokenx", "Admin-token", ""] {
            assert!(!constant_time_eq(
                hash_token(wrong).as_bytes(),
                admin.as_bytes()
            ));
        }
        assert!(!constant_time_eq(b"short", admin.as_bytes()));
        // Stored form: 64 hex digits, never the token.
        assert_eq!(admin.len(), 64);
        assert!(!admin.contains("admin"));
    }
}
