//! The native JWT connection policy (`[auth.jwt]`).
//!
//! Native rather than a plugin: it runs once per connection, needs real
//! cryptography (RSA, P-256), and `jsonwebtoken` is the maintained,
//! widely used implementation (with its pure-Rust `rust_crypto` backend, so
//! no C toolchain).
//!
//! Where the token comes from, one rule: the first of the `connection_init`
//! payload's `token_field`, `Authorization` and `authorization` that is
//! present and not null is the token, and must be a non-empty string (a
//! number, an empty string or an invalid token is refused, never passed
//! over); only when the payload has none of them is the upgrade request's
//! `Authorization` header read. Either may be `Bearer <token>` (the scheme
//! in any case) or the bare token; another scheme is refused.
//!
//! A missing, malformed, wrongly signed, wrong-algorithm, expired or
//! not-yet-valid token is refused (close 4403), and so is one without the
//! configured `iss` or `aud`. An accepted token's `exp` (whole or
//! fractional seconds) becomes the principal's expiry, and the host closes
//! the connection at that moment.

use std::path::{Path, PathBuf};

use fanwire_core::hooks::{Accepted, ConnectionPolicy, ConnectionRequest};
use fanwire_core::Principal;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::LoadError;

/// The largest clock skew `leeway_s` may tolerate.
pub const MAX_LEEWAY_S: u64 = 86_400;

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
    /// Required `iss`, if set: a token without it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud`, if set: a token without it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf` at connect (at most a
    /// day); a live connection still closes at `exp` itself.
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
        // jsonwebtoken computes `now - leeway` unchecked.
        if config.leeway_s > MAX_LEEWAY_S {
            return Err(invalid(format!(
                "leeway_s must be at most {MAX_LEEWAY_S} (a day), got {}",
                config.leeway_s
            )));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_s;
        validation.validate_nbf = true;
        // jsonwebtoken checks `iss` and `aud` only when the token has them:
        // a configured one must also be present.
        let mut required = vec!["exp"];
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtPolicy {
            key,
            validation,
            config,
        })
    }

    /// The token of a connection request (see the module doc for the rule).
    fn token<'a>(&self, request: &'a ConnectionRequest<'_>) -> Result<&'a str, String> {
        let payload = request.init_payload;
        let given = [
            self.config.token_field.as_str(),
            "Authorization",
            "authorization",
        ]
        .into_iter()
        .find_map(|field| match payload.get(field) {
            None | Some(Value::Null) => None,
            Some(value) => Some((field, value)),
        });
        if let Some((field, value)) = given {
            return match value {
                Value::String(s) => credentials(s),
                _ => Err(format!(
                    "connection_init payload field `{field}` must be a token string"
                )),
            };
        }
        let header = request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        match header {
            Some((_, value)) => credentials(value),
            None => Err("Missing authentication token".to_owned()),
        }
    }
}

/// The token of an `Authorization` value: `Bearer <token>`, the scheme in
/// any case (RFC 7235), or the bare token.
fn credentials(value: &str) -> Result<&str, String> {
    let value = value.trim();
    let token = match value.split_once([' ', '\t']) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some((scheme, _)) => {
            return Err(format!(
                "Authorization scheme `{scheme}` not accepted (use Bearer)"
            ))
        }
        None if value.eq_ignore_ascii_case("bearer") => "",
        None => value,
    };
    if token.is_empty() {
        return Err("Missing authentication token".to_owned());
    }
    Ok(token)
}

/// The expiry of verified claims in whole Unix seconds, rounded down so a
/// fractional `exp` (RFC 7519 NumericDate) is never exceeded. jsonwebtoken
/// has already refused a negative, non-numeric or out-of-range `exp`.
fn expiry(claims: &Map<String, Value>) -> Option<u64> {
    let exp = claims.get("exp")?.as_number()?;
    if let Some(secs) = exp.as_u64() {
        return Some(secs);
    }
    let secs = exp.as_f64()?;
    // `as` saturates; anything past u64 is no practical expiry anyway.
    (secs.is_finite() && secs >= 0.0).then(|| secs.floor() as u64)
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
        let token = self.token(request)?;
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
            ErrorKind::MissingRequiredClaim(claim) => {
                format!("Token has no valid `{claim}` claim")
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                format!("Token claim `{claim}` is not a valid NumericDate")
            }
            _ => format!("Invalid token: {e}"),
        })?;
        let claims = data.claims;
        // RFC 7519: `iss` is one StringOrURI; jsonwebtoken also matches a
        // list that contains the configured issuer.
        if self.config.issuer.is_some() && !matches!(claims.get("iss"), Some(Value::String(_))) {
            return Err("Token issuer not accepted".to_owned());
        }
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
                expires_at: expiry(&claims),
                claims,
            },
            ack: None,
        })
    }
}
