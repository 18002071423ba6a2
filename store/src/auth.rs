//! Bearer tokens: verifying the JWTs an identity provider issues, and who they name.
//!
//! orderflow is not an identity provider. It checks a token's signature with a key it is
//! given (an HS256 secret, or an RS256/ES256 public key as PEM or JWKS), on the algorithm it
//! is configured with (never the one a token names), then `iss`, `aud`, `exp` and `nbf`.
//! A token names a subject (`sub`, the user id for customers) and roles (`customer`,
//! `admin`). [`Caller`] is what handlers see; [`authenticate`] is the middleware that puts
//! it in a request's extensions.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::parse_duration;

/// Longest `Authorization` value looked at: real tokens are a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Shortest HS256 secret accepted: 256 bits, the hash's own size (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// The default issuer and audience: what `orderflow token` mints and `orderflow dev` expects.
pub const DEFAULT_ISSUER: &str = "orderflow";
pub const DEFAULT_AUDIENCE: &str = "orderflow";

/// How tokens are verified; flattened into `orderflow command`, `orderflow query` and
/// `orderflow token`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Signature algorithm every token must use; a token naming another (or `none`) is
    /// refused.
    #[arg(long = "auth-algorithm", env = "ORDERFLOW_AUTH_ALGORITHM", value_enum, default_value_t = AuthAlgorithm::Hs256)]
    pub algorithm: AuthAlgorithm,
    /// HS256 shared secret (at least 32 bytes). Prefer --auth-secret-file, which keeps it
    /// out of the process list.
    #[arg(
        long = "auth-secret",
        env = "ORDERFLOW_AUTH_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// File holding the HS256 shared secret (surrounding whitespace ignored).
    #[arg(long = "auth-secret-file", env = "ORDERFLOW_AUTH_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// PEM public key (RS256 or ES256) of the identity provider.
    #[arg(long = "auth-public-key-file", env = "ORDERFLOW_AUTH_PUBLIC_KEY_FILE")]
    pub public_key_file: Option<PathBuf>,
    /// JWKS file (RS256 or ES256) of the identity provider; a token's `kid` picks the key.
    #[arg(long = "auth-jwks-file", env = "ORDERFLOW_AUTH_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// The `iss` every token must carry.
    #[arg(long = "auth-issuer", env = "ORDERFLOW_AUTH_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// The `aud` every token must carry (one of its audiences).
    #[arg(long = "auth-audience", env = "ORDERFLOW_AUTH_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long = "auth-leeway", env = "ORDERFLOW_AUTH_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub leeway: Duration,
    /// Serve without verifying tokens: whoever reaches the port may do anything. For local
    /// experiments only; logged loudly at start.
    #[arg(long = "insecure-no-auth", env = "ORDERFLOW_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl AuthAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

impl AuthArgs {
    /// HS256 with `secret`, the default issuer and audience: for tests and `orderflow dev`.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            algorithm: AuthAlgorithm::Hs256,
            secret: Some(secret.into()),
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            leeway: Duration::from_secs(30),
            insecure_no_auth: false,
        }
    }

    /// The verifier these flags describe; [`Auth::Off`] only with `--insecure-no-auth`.
    /// Without a key, or with a key that does not fit the algorithm, the role must not
    /// start.
    pub fn auth(&self) -> Result<Auth, String> {
        if self.insecure_no_auth {
            return Ok(Auth::Off);
        }
        let keys = match self.algorithm {
            AuthAlgorithm::Hs256 => {
                if self.public_key_file.is_some() || self.jwks_file.is_some() {
                    return Err("HS256 verifies with a shared secret (--auth-secret or --auth-secret-file), not a public key; set --auth-algorithm RS256 or ES256 for those".into());
                }
                Keys::One(DecodingKey::from_secret(&self.secret()?).map_err(|err| err.to_string())?)
            }
            AuthAlgorithm::Rs256 | AuthAlgorithm::Es256 => {
                if self.given_secret().is_some() || self.secret_file.is_some() {
                    return Err(format!("{:?} verifies with a public key (--auth-public-key-file or --auth-jwks-file), not a shared secret", self.algorithm.jwt()));
                }
                match (&self.public_key_file, &self.jwks_file) {
                    (Some(_), Some(_)) => {
                        return Err(
                            "give --auth-public-key-file or --auth-jwks-file, not both".into()
                        )
                    }
                    (Some(path), None) => {
                        let pem = std::fs::read(path)
                            .map_err(|err| format!("reading {}: {err}", path.display()))?;
                        let key = match self.algorithm {
                            AuthAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&pem),
                            _ => DecodingKey::from_ec_pem(&pem),
                        }
                        .map_err(|err| {
                            format!(
                                "{} is not a {:?} public key: {err}",
                                path.display(),
                                self.algorithm.jwt()
                            )
                        })?;
                        Keys::One(key)
                    }
                    (None, Some(path)) => Keys::Set(self.jwks(path)?),
                    (None, None) => return Err(missing_key()),
                }
            }
        };
        if self.leeway > Duration::from_secs(300) {
            return Err("--auth-leeway must be at most 5m".into());
        }
        let mut validation = Validation::new(self.algorithm.jwt());
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Ok(Auth::On(Arc::new(Verifier {
            algorithm: self.algorithm.jwt(),
            keys,
            validation,
        })))
    }

    /// `--auth-secret` when it holds more than whitespace (an empty variable, as compose
    /// passes one, counts as none).
    fn given_secret(&self) -> Option<&str> {
        self.secret
            .as_deref()
            .filter(|secret| !secret.trim().is_empty())
    }

    /// The HS256 secret, from the flag or the file.
    pub fn secret(&self) -> Result<Vec<u8>, String> {
        let secret = match (self.given_secret(), &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err("give --auth-secret or --auth-secret-file, not both".into())
            }
            (Some(secret), None) => secret.trim().as_bytes().to_vec(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|err| format!("reading {}: {err}", path.display()))?
                .trim()
                .as_bytes()
                .to_vec(),
            (None, None) => return Err(missing_key()),
        };
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the HS256 secret must be at least {MIN_SECRET_LEN} bytes"
            ));
        }
        Ok(secret)
    }

    fn jwks(&self, path: &PathBuf) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("reading {}: {err}", path.display()))?;
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|err| format!("{} is not a JWKS: {err}", path.display()))?;
        let algorithm = self.algorithm.jwt();
        // A key for encryption, or one its provider meant for another algorithm, verifies
        // nothing here.
        let keys: Vec<_> = set
            .keys
            .iter()
            .filter(|jwk| {
                !matches!(jwk.common.public_key_use, Some(ref usage) if *usage != jsonwebtoken::jwk::PublicKeyUse::Signature)
            })
            .filter(|jwk| {
                jwk.common
                    .key_algorithm
                    .is_none_or(|alg| alg.to_string() == format!("{algorithm:?}"))
            })
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).ok()?;
                (key.family() == algorithm.family()).then(|| (jwk.common.key_id.clone(), key))
            })
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "{} holds no {:?} key",
                path.display(),
                self.algorithm.jwt()
            ));
        }
        Ok(keys)
    }
}

fn missing_key() -> String {
    "no key to verify tokens with: give --auth-secret or --auth-secret-file (HS256), or --auth-public-key-file or --auth-jwks-file with --auth-algorithm RS256|ES256; --insecure-no-auth serves without authentication (local experiments only)".into()
}

/// Whether a service verifies tokens.
#[derive(Clone)]
pub enum Auth {
    /// Every request is let through as [`Caller::Unchecked`] (`--insecure-no-auth`, tests).
    Off,
    On(Arc<Verifier>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("Auth::Off"),
            Self::On(verifier) => write!(f, "Auth::On({:?})", verifier.algorithm),
        }
    }
}

impl Auth {
    /// Log loudly when a serving role runs without authentication.
    pub fn warn_if_off(&self, role: &str) {
        if matches!(self, Self::Off) {
            tracing::warn!(
                role,
                "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who reaches this port can read and change every order"
            );
        }
    }

    /// Who a request's headers name.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        match self {
            Self::Off => Ok(Caller::Unchecked),
            Self::On(verifier) => match bearer(headers)? {
                None => Ok(Caller::Anonymous),
                Some(token) => verifier.verify(token).map(Caller::Token),
            },
        }
    }

    /// Who a `connection_init` authorization value (`"Bearer <JWT>"`) names; none is
    /// refused.
    pub fn caller_from_value(&self, value: Option<&str>) -> Result<Caller, AuthError> {
        match self {
            Self::Off => Ok(Caller::Unchecked),
            Self::On(verifier) => {
                let value = value.ok_or(AuthError::Missing)?;
                let token = strip_bearer(value)?;
                verifier.verify(token).map(Caller::Token)
            }
        }
    }
}

/// Keys and rules for tokens.
pub struct Verifier {
    algorithm: Algorithm,
    keys: Keys,
    validation: Validation,
}

enum Keys {
    One(DecodingKey),
    /// From a JWKS: by `kid`, or the only key when the token names none.
    Set(Vec<(Option<String>, DecodingKey)>),
}

impl Verifier {
    /// The token's subject and roles, if its signature, algorithm and claims hold.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid("the token is too long".into()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if header.alg != self.algorithm {
            return Err(AuthError::Invalid(format!(
                "tokens must be signed with {:?}",
                self.algorithm
            )));
        }
        let key = match &self.keys {
            Keys::One(key) => key,
            Keys::Set(keys) => match (&header.kid, keys.as_slice()) {
                (None, [(_, only)]) => only,
                (None, _) => return Err(AuthError::Invalid("the token names no `kid`".into())),
                (Some(kid), keys) => keys
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(kid))
                    .map(|(_, key)| key)
                    .ok_or_else(|| AuthError::Invalid("no key has the token's `kid`".into()))?,
            },
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(invalid)?;
        let mut principal = Principal::from_claims(data.claims)?;
        principal.expires_at = principal
            .expires_at
            .saturating_add(self.validation.leeway as i64);
        Ok(principal)
    }
}

fn invalid(err: jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::Invalid("the token is not valid yet".into()),
        ErrorKind::InvalidSignature => AuthError::Invalid("the signature does not verify".into()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::Invalid("the token's algorithm is not the one accepted".into())
        }
        ErrorKind::InvalidIssuer => AuthError::Invalid("the token's issuer is not accepted".into()),
        ErrorKind::InvalidAudience => {
            AuthError::Invalid("the token is not for this audience".into())
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::Invalid(format!("the token has no `{claim}`"))
        }
        _ => AuthError::Invalid("not a valid token".into()),
    }
}

/// The claims orderflow reads (`iss`, `aud` and `nbf` are checked by the verifier); others
/// are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    exp: i64,
}

/// What [`mint`] signs.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    roles: Vec<&'static str>,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// A verified token's subject and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    /// `sub` as a user id: customers act on the user with this id.
    pub user_id: Option<Uuid>,
    pub admin: bool,
    pub customer: bool,
    /// Unix seconds after which the token no longer holds, leeway included (ends
    /// subscriptions and refuses later requests on a long-lived connection).
    pub expires_at: i64,
}

impl Principal {
    fn from_claims(claims: Claims) -> Result<Self, AuthError> {
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(AuthError::Invalid(
                "`sub` must be 1 to 255 characters".into(),
            ));
        }
        // Roles other than orderflow's are another application's business, and grant nothing.
        let roles: HashSet<&str> = claims.roles.iter().map(String::as_str).collect();
        let customer = roles.contains(Role::Customer.as_str());
        // The nil and max UUIDs are markers, never users.
        let user_id = Uuid::parse_str(&claims.sub)
            .ok()
            .filter(|id| !id.is_nil() && !id.is_max());
        if customer && user_id.is_none() {
            return Err(AuthError::Invalid(
                "a customer's `sub` must be their user id (a UUID, not nil or max)".into(),
            ));
        }
        Ok(Self {
            user_id,
            admin: roles.contains(Role::Admin.as_str()),
            customer,
            expires_at: claims.exp,
            sub: claims.sub,
        })
    }

    /// The roles, as recorded in event metadata.
    pub fn roles(&self) -> Vec<String> {
        let mut roles = Vec::new();
        if self.customer {
            roles.push(Role::Customer.as_str().to_owned());
        }
        if self.admin {
            roles.push(Role::Admin.as_str().to_owned());
        }
        roles
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: allowed everything, recorded as nobody.
    Unchecked,
    /// No token was sent (only public routes answer).
    Anonymous,
    Token(Principal),
}

/// What a caller may see of things that belong to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (admins; authentication off).
    All,
    /// Only what belongs to this user.
    User(Uuid),
}

impl Caller {
    /// Admins, and everyone while authentication is off.
    pub fn is_admin(&self) -> bool {
        match self {
            Self::Unchecked => true,
            Self::Anonymous => false,
            Self::Token(principal) => principal.admin,
        }
    }

    /// What this caller may read or change of users' things: `None` when they may not
    /// (anonymous, or a token with neither role).
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Self::Unchecked => Some(Scope::All),
            Self::Anonymous => None,
            Self::Token(p) if p.admin => Some(Scope::All),
            Self::Token(p) if p.customer => p.user_id.map(Scope::User),
            Self::Token(_) => None,
        }
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Self::Token(principal) => Some(principal),
            _ => None,
        }
    }

    /// Whether the token has expired since it was verified (long-lived connections).
    pub fn expired(&self) -> bool {
        self.principal()
            .is_some_and(|p| chrono::Utc::now().timestamp() > p.expires_at)
    }
}

impl Scope {
    /// Whether something belonging to `owner` is visible in this scope.
    pub fn covers(self, owner: Uuid) -> bool {
        match self {
            Self::All => true,
            Self::User(user) => user == owner,
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this needs a bearer token (Authorization: Bearer <JWT>)")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// `UNAUTHENTICATED`, or `TOKEN_EXPIRED` for a token that was good once.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired => "TOKEN_EXPIRED",
            _ => "UNAUTHENTICATED",
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3).
    pub fn challenge(&self) -> HeaderValue {
        match self {
            Self::Missing => HeaderValue::from_static("Bearer realm=\"orderflow\""),
            Self::Expired => HeaderValue::from_static(
                "Bearer realm=\"orderflow\", error=\"invalid_token\", error_description=\"the token has expired\"",
            ),
            Self::Invalid(_) => {
                HeaderValue::from_static("Bearer realm=\"orderflow\", error=\"invalid_token\"")
            }
        }
    }
}

/// The bearer token of `Authorization`, if any.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("Authorization is not visible ASCII".into()))?;
    strip_bearer(value).map(Some)
}

fn strip_bearer(value: &str) -> Result<&str, AuthError> {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(AuthError::Invalid(
            "Authorization must be \"Bearer <JWT>\"".into(),
        )),
    }
}

/// A request's verified caller, or why it has none; put in the request's extensions by
/// [`authenticate`], read by handlers and by the rate limiter.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Result<Caller, AuthError>);

/// Middleware: verify the request's token once and keep the answer in its extensions.
/// Refusing is left to the routes, since some are public.
pub async fn authenticate(auth: Auth, mut request: Request, next: Next) -> Response {
    let caller = auth.caller(request.headers());
    if let Ok(Caller::Token(principal)) = &caller {
        tracing::Span::current().record("sub", principal.sub.as_str());
    }
    request.extensions_mut().insert(Authenticated(caller));
    next.run(request).await
}

/// Mint an HS256 token, as an identity provider would: for `orderflow token`, `orderflow
/// dev` and tests.
pub fn mint(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    sub: &str,
    roles: &[Role],
    ttl: Duration,
) -> Result<String, String> {
    let now = chrono::Utc::now().timestamp();
    let claims = MintedClaims {
        sub,
        roles: roles.iter().map(|role| role.as_str()).collect(),
        iss: issuer,
        aud: audience,
        iat: now,
        exp: now.saturating_add(ttl.as_secs() as i64),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret).map_err(|err| err.to_string())?,
    )
    .map_err(|err| err.to_string())
}

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(test)]
mod tests;
