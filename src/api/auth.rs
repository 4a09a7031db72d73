//! Who is calling: RiverEdge's HS256 access tokens (riveredge.md §5) and the roles the backup
//! API distinguishes.
//!
//! The tenant comes from the token and nowhere else: `X-Tenant-ID`, query parameters and bodies
//! never widen what a tenant admin can reach (the page sends `X-Tenant-ID`; it is ignored).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::error::ApiError;
use super::ApiState;
use crate::db::api::Scope;

/// Clock skew tolerated on `exp`: RiverEdge and the worker run on different hosts; a token
/// 30 s past its 30-minute life is not a risk worth a failed click.
pub const LEEWAY_SECS: u64 = 30;

/// The claims we read; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    /// The user id, a string in RiverEdge's tokens (a number is accepted too).
    sub: serde_json::Value,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    tenant_id: Option<i64>,
    #[serde(default)]
    is_infra_admin: bool,
    #[serde(default)]
    is_tenant_admin: bool,
    #[serde(default)]
    is_infra_superadmin: bool,
}

/// What the caller may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `is_infra_admin` with no tenant, or `is_infra_superadmin`: every tenant, scope `all`,
    /// the policy.
    Platform,
    /// `is_tenant_admin` with a tenant: that tenant's backups only.
    TenantAdmin(i32),
}

/// An authenticated admin.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's `sub`, for audit columns and logs (never the token itself).
    pub sub: String,
    pub username: Option<String>,
    pub role: Role,
}

impl Caller {
    pub fn scope(&self) -> Scope {
        match self.role {
            Role::Platform => Scope::Platform,
            Role::TenantAdmin(t) => Scope::Tenant(t),
        }
    }

    pub fn tenant(&self) -> Option<i32> {
        match self.role {
            Role::Platform => None,
            Role::TenantAdmin(t) => Some(t),
        }
    }

    pub fn is_platform(&self) -> bool {
        self.role == Role::Platform
    }

    /// # Errors
    /// 403 for tenant admins.
    pub fn require_platform(&self, what: &str) -> Result<(), ApiError> {
        if self.is_platform() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "only platform administrators may {what}"
            )))
        }
    }
}

/// The verifier built from `JWT_SECRET_KEY`.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { key: [redacted], alg: HS256 }")
    }
}

impl Verifier {
    pub fn hs256(secret: &[u8]) -> Self {
        // Only HS256: a token naming another algorithm (`none`, RS256 with the secret as a
        // "public key") is rejected before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// # Errors
    /// 401 for any token that does not verify; 403 for a valid token of a non-admin.
    pub fn caller(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("token expired")
                }
                _ => ApiError::Unauthorized("invalid token"),
            },
        )?;
        let claims = data.claims;
        let sub = match &claims.sub {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(ApiError::Unauthorized("invalid token")),
        };
        let tenant = claims
            .tenant_id
            .map(|t| i32::try_from(t).map_err(|_| ApiError::Unauthorized("invalid token")))
            .transpose()?;
        let role = match tenant {
            _ if claims.is_infra_superadmin => Role::Platform,
            None if claims.is_infra_admin => Role::Platform,
            Some(t) if claims.is_tenant_admin => Role::TenantAdmin(t),
            _ => {
                return Err(ApiError::Forbidden(
                    "backups are managed by tenant and platform administrators".to_owned(),
                ))
            }
        };
        Ok(Caller {
            sub,
            username: claims.username,
            role,
        })
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let Some(verifier) = &state.verifier else {
            return Err(ApiError::Unavailable {
                code: "api_not_configured",
                detail: "the REST API is disabled: JWT_SECRET_KEY is not set".to_owned(),
            });
        };
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized("not authenticated"))?;
        verifier.caller(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"s"),
        )
        .unwrap()
    }

    fn role(claims: serde_json::Value) -> Result<Role, u16> {
        let exp = chrono::Utc::now().timestamp() + 60;
        let mut claims = claims;
        claims["exp"] = json!(exp);
        claims["sub"] = json!("1");
        Verifier::hs256(b"s")
            .caller(&token(claims))
            .map(|c| c.role)
            .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn roles_follow_riveredges_admin_rules() {
        assert_eq!(
            role(json!({"is_infra_admin": true, "tenant_id": null})),
            Ok(Role::Platform)
        );
        assert_eq!(
            role(json!({"is_infra_superadmin": true})),
            Ok(Role::Platform)
        );
        assert_eq!(
            role(json!({"is_tenant_admin": true, "tenant_id": 5})),
            Ok(Role::TenantAdmin(5))
        );
        // An infra admin bound to a tenant is not a platform admin (riveredge.md §5).
        assert_eq!(
            role(json!({"is_infra_admin": true, "tenant_id": 5})),
            Err(403)
        );
        assert_eq!(
            role(json!({"is_tenant_admin": true, "tenant_id": null})),
            Err(403)
        );
        assert_eq!(role(json!({"tenant_id": 5})), Err(403));
    }

    #[test]
    fn exp_is_enforced_with_a_small_leeway_and_required() {
        let v = Verifier::hs256(b"s");
        let now = chrono::Utc::now().timestamp();
        let admin = |exp: Option<i64>| {
            let mut c = json!({"sub": "1", "is_infra_superadmin": true});
            if let Some(exp) = exp {
                c["exp"] = json!(exp);
            }
            token(c)
        };
        assert!(
            v.caller(&admin(Some(now - 10))).is_ok(),
            "within the leeway"
        );
        let late = i64::try_from(LEEWAY_SECS).unwrap() + 60;
        assert_eq!(
            v.caller(&admin(Some(now - late)))
                .unwrap_err()
                .status()
                .as_u16(),
            401
        );
        assert_eq!(v.caller(&admin(None)).unwrap_err().status().as_u16(), 401);
    }
}
