//! Pub/Sub push authentication. A push subscription with `--push-auth-service-account` sends
//! `Authorization: Bearer <JWT>`: an OIDC ID token signed by Google (RS256, `kid` naming one of the
//! keys at `https://www.googleapis.com/oauth2/v3/certs`), with `iss` Google, `aud` the configured
//! audience (by default the push endpoint URL), `email` the push service account and
//! `email_verified` true. [`verify`] checks all of it against a key set and a [`Policy`]; fetching and
//! caching the key set is the caller's job (the host does it natively; a function under Spin would do
//! it over outbound HTTP), so this crate has no I/O and builds for the host and for wasm alike.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Google's token issuers.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Google's OAuth2 signing keys.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// What a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The `aud` claim the subscription was configured with.
    pub audience: String,
    /// `email` claims accepted: the push service accounts.
    pub service_accounts: Vec<String>,
    /// `iss` claims accepted.
    pub issuers: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_seconds: u64,
}

/// The claims a push token carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: Option<String>,
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    pub exp: u64,
    pub iat: Option<u64>,
}

/// Why a push was not accepted. [`AuthError::status`] is the HTTP answer; Pub/Sub retries either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no 'Authorization: Bearer' token")]
    Missing,
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    #[error("the token is signed with {0:?}; push tokens are RS256")]
    WrongAlgorithm(Algorithm),
    #[error("no signing key with kid '{0}' in the key set")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf/iat in the future)")]
    NotYetValid,
    #[error("issuer '{0}' is not accepted")]
    WrongIssuer(String),
    #[error("the token's audience is not '{0}'")]
    WrongAudience(String),
    #[error("email '{0}' is not an accepted push service account")]
    WrongEmail(String),
    #[error("the token's email is not verified")]
    EmailNotVerified,
}

impl AuthError {
    /// 401 when the request is not authenticated, 403 when a valid token is not allowed here.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongAudience(_) | AuthError::WrongEmail(_) | AuthError::EmailNotVerified => 403,
            _ => 401,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::WrongAlgorithm(_) => "wrong_algorithm",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer(_) => "wrong_issuer",
            AuthError::WrongAudience(_) => "wrong_audience",
            AuthError::WrongEmail(_) => "wrong_email",
            AuthError::EmailNotVerified => "email_not_verified",
        }
    }
}

/// The token of an `Authorization` header value.
pub fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

/// The `kid` a token names, so the caller can refresh its key set when it does not know it.
pub fn key_id(token: &str) -> Result<String, AuthError> {
    let header = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::RS256 {
        return Err(AuthError::WrongAlgorithm(header.alg));
    }
    header.kid.ok_or_else(|| AuthError::Malformed("the token header has no 'kid'".into()))
}

/// Verifies `token` against `keys` and `policy` (expiry against the system clock).
pub fn verify(token: &str, keys: &JwkSet, policy: &Policy) -> Result<Claims, AuthError> {
    let kid = key_id(token)?;
    let jwk = keys.find(&kid).ok_or_else(|| AuthError::UnknownKey(kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Malformed(format!("key '{kid}': {e}")))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&policy.audience]);
    validation.set_issuer(&policy.issuers);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    validation.validate_nbf = true;
    validation.leeway = policy.leeway_seconds;
    let data = decode::<Claims>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer(issuer_of(token)),
            ErrorKind::InvalidAudience => AuthError::WrongAudience(policy.audience.clone()),
            ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm(Algorithm::RS256),
            _ => AuthError::Malformed(e.to_string()),
        }
    })?;
    let claims = data.claims;
    if let Some(iat) = claims.iat {
        let now = jsonwebtoken::get_current_timestamp();
        if iat > now + policy.leeway_seconds {
            return Err(AuthError::NotYetValid);
        }
    }
    let email = claims.email.clone().unwrap_or_default();
    if !policy.service_accounts.iter().any(|a| a.eq_ignore_ascii_case(&email)) {
        return Err(AuthError::WrongEmail(email));
    }
    if !claims.email_verified {
        return Err(AuthError::EmailNotVerified);
    }
    Ok(claims)
}

/// The `iss` of a token whose issuer was refused, for the message (unverified, only echoed).
fn issuer_of(token: &str) -> String {
    use base64::Engine as _;
    token
        .split('.')
        .nth(1)
        .and_then(|payload| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|claims| claims.get("iss").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Bearer ")), Err(AuthError::Missing));
        assert_eq!(bearer(None), Err(AuthError::Missing));
    }

    #[test]
    fn statuses_split_authentication_from_authorization() {
        assert_eq!(AuthError::Expired.status(), 401);
        assert_eq!(AuthError::WrongEmail("x".into()).status(), 403);
        assert_eq!(AuthError::Malformed("x".into()).label(), "malformed");
        assert!(matches!(key_id("not.a.jwt"), Err(AuthError::Malformed(_))));
    }
}
