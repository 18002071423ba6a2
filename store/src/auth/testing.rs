//! Every kind of token a test of an authenticated route needs, good and bad.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

use super::{mint, Auth, AuthArgs, Role, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// The HS256 secret of [`auth`].
pub const SECRET: &str = "orderflow-tests-secret-0123456789abcdef";

/// A verifier of HS256 tokens signed with [`SECRET`], with no leeway (so expiry is exact).
pub fn auth() -> Auth {
    AuthArgs {
        leeway: Duration::ZERO,
        ..AuthArgs::with_secret(SECRET)
    }
    .auth()
    .expect("the test secret is long enough")
}

/// A customer's token for `user`, valid for an hour.
pub fn customer(user: Uuid) -> String {
    token(
        &user.to_string(),
        &[Role::Customer],
        Duration::from_secs(3600),
    )
}

/// An admin's token, valid for an hour.
pub fn admin() -> String {
    token("admin@tests", &[Role::Admin], Duration::from_secs(3600))
}

/// A token signed with [`SECRET`].
pub fn token(sub: &str, roles: &[Role], ttl: Duration) -> String {
    mint(
        SECRET.as_bytes(),
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
        sub,
        roles,
        ttl,
    )
    .expect("a token")
}

/// The tokens every authenticated route must refuse with 401, named, with the code each
/// gets: expired, signed with another secret, `alg: none`, and for another audience.
pub fn refused(user: Uuid) -> Vec<(&'static str, String, &'static str)> {
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, aud: &str| {
        serde_json::json!({"sub": user.to_string(), "roles": ["customer", "admin"],
            "iss": DEFAULT_ISSUER, "aud": aud, "iat": now - 7200, "exp": exp})
    };
    let sign = |claims: serde_json::Value, secret: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).expect("a key"),
        )
        .expect("a token")
    };
    let b64 = |value: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(claims(now + 3600, DEFAULT_AUDIENCE))
    );
    vec![
        (
            "expired",
            sign(claims(now - 60, DEFAULT_AUDIENCE), SECRET),
            "TOKEN_EXPIRED",
        ),
        (
            "wrong signature",
            sign(
                claims(now + 3600, DEFAULT_AUDIENCE),
                "another-secret-of-at-least-32-bytes!!",
            ),
            "UNAUTHENTICATED",
        ),
        ("alg none", unsigned, "UNAUTHENTICATED"),
        (
            "wrong audience",
            sign(claims(now + 3600, "someone-else"), SECRET),
            "UNAUTHENTICATED",
        ),
    ]
}
