//! The native JWT connection policy (`[auth.jwt]`).
//!
//! Native rather than a plugin: it runs once per connection, needs real
//! cryptography (RSA, P-256), and `jsonwebtoken` is the maintained,
//! widely used implementation (with its pure-Rust `rust_crypto` backend, so
//! no C toolchain). Tokens come from the `connection_init` payload (`token`,
//! or `Authorization: Bearer ...`) or the upgrade request's `Authorization`
//! header. A missing, malformed, wrongly signed, wrong-algorithm or expired
//! token is refused (close 4403); an accepted token's `exp` becomes the
//! principal's expiry, and the host closes the connection at that moment.

use std::path::{Path, PathBuf};

use fanwire_core::hooks::{Accepted, ConnectionPolicy, ConnectionRequest};
use fanwire_core::Principal;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::LoadError;

/// The signing algorithms the policy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared `secret`.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256 and a public key.
    RS256,
    /// ECDSA on P-256 with SHA-256 and a public key.
    ES256,
}

/// The `[auth.jwt]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The one algorithm tokens must be signed with.
    pub algorithm: JwtAlgorithm,
    /// The shared secret (HS256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A PEM public key file (RS256, ES256), relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// The `connection_init` payload field holding the token.
    #[serde(default = "default_token_field")]
    pub token_field: String,
    /// Required `iss`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[serde(default)]
    pub leeway_s: u64,
    /// The claim naming the principal's tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// The claim listing the principal's roles (an array, or a space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_token_field() -> String {
    "token".into()
}

fn default_tenant_claim() -> String {
    "tenant_id".into()
}

fn default_roles_claim() -> String {
    "roles".into()
}

impl JwtConfig {
    /// A config for `algorithm` with every other field at its default.
    pub fn new(algorithm: JwtAlgorithm) -> Self {
        JwtConfig {
            algorithm,
            secret: None,
            public_key_file: None,
            token_field: default_token_field(),
            issuer: None,
            audience: None,
            leeway_s: 0,
            tenant_claim: default_tenant_claim(),
            roles_claim: default_roles_claim(),
        }
    }
}

/// Verifies JWTs at `connection_init`.
pub struct JwtPolicy {
    key: DecodingKey,
    validation: Validation,
    config: JwtConfig,
}

impl std::fmt::Debug for JwtPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtPolicy")
            .field("algorithm", &self.config.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtPolicy {
    /// Reads the key; a relative key file is resolved against `base`.
    pub fn new(config: JwtConfig, base: &Path) -> Result<JwtPolicy, LoadError> {
        let invalid = |m: String| LoadError::Config(format!("auth.jwt: {m}"));
        let pem = || -> Result<Vec<u8>, LoadError> {
            let file = config
                .public_key_file
                .as_ref()
                .ok_or_else(|| invalid(format!("{:?} needs public_key_file", config.algorithm)))?;
            let path = base.join(file);
            std::fs::read(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))
        };
        let (algorithm, key) = match config.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = config
                    .secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| invalid("HS256 needs a non-empty secret".into()))?;
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret.as_bytes()),
                )
            }
            JwtAlgorithm::RS256 => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(&pem()?).map_err(|e| invalid(e.to_string()))?,
            ),
            JwtAlgorithm::ES256 => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(&pem()?).map_err(|e| invalid(e.to_string()))?,
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_s;
        validation.validate_nbf = true;
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(JwtPolicy {
            key,
            validation,
            config,
        })
    }

    /// The token of a connection request, if it carries one.
    fn token<'a>(&self, request: &'a ConnectionRequest<'_>) -> Option<&'a str> {
        let bearer = |v: &'a str| v.strip_prefix("Bearer ").unwrap_or(v).trim();
        let payload = request.init_payload;
        payload
            .get(&self.config.token_field)
            .or_else(|| payload.get("Authorization"))
            .or_else(|| payload.get("authorization"))
            .and_then(Value::as_str)
            .or_else(|| {
                request
                    .headers
                    .iter()
                    .find(|(n, _)| n == "authorization")
                    .map(|(_, v)| v.as_str())
            })
            .map(bearer)
            .filter(|t| !t.is_empty())
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl ConnectionPolicy for JwtPolicy {
    fn check(&self, request: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        let token = self
            .token(request)
            .ok_or_else(|| "Missing authentication token".to_owned())?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => "Token expired".to_owned(),
            ErrorKind::InvalidSignature => "Invalid token signature".to_owned(),
            ErrorKind::InvalidAlgorithm => format!(
                "Token algorithm not accepted (expected {:?})",
                self.config.algorithm
            ),
            ErrorKind::ImmatureSignature => "Token not yet valid".to_owned(),
            ErrorKind::InvalidIssuer => "Token issuer not accepted".to_owned(),
            ErrorKind::InvalidAudience => "Token audience not accepted".to_owned(),
            _ => format!("Invalid token: {e}"),
        })?;
        let claims = data.claims;
        let roles = match claims.get(&self.config.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Accepted {
            principal: Principal {
                subject: text(claims.get("sub")),
                tenant: text(claims.get(&self.config.tenant_claim)),
                roles,
                expires_at: claims.get("exp").and_then(Value::as_u64),
                claims,
            },
            ack: None,
        })
    }
}
