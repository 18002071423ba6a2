use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn hs256() -> Auth {
    AuthArgs::with_secret(SECRET).auth().unwrap()
}

fn verify(auth: &Auth, token: &str) -> Result<Principal, AuthError> {
    match auth {
        Auth::On(verifier) => verifier.verify(token),
        Auth::Off => unreachable!(),
    }
}

fn token(sub: &str, roles: &[Role], ttl: u64) -> String {
    mint(
        SECRET.as_bytes(),
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
        sub,
        roles,
        Duration::from_secs(ttl),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with `header` and `claims` and an HS256 signature by `secret` (or none).
fn forge(header: serde_json::Value, claims: serde_json::Value, secret: Option<&[u8]>) -> String {
    use hmac::Mac as _;
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = match secret {
        Some(secret) => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            mac.update(message.as_bytes());
            b64(&mac.finalize().into_bytes())
        }
        None => String::new(),
    };
    format!("{message}.{signature}")
}

fn claims(sub: &str) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({"sub": sub, "roles": ["customer"], "iss": "orderflow", "aud": "orderflow", "iat": now, "exp": now + 600})
}

#[test]
fn a_minted_token_names_its_subject_and_roles() {
    let user = Uuid::now_v7();
    let principal = verify(&hs256(), &token(&user.to_string(), &[Role::Customer], 60)).unwrap();
    assert_eq!(principal.user_id, Some(user));
    assert!(principal.customer && !principal.admin);
    let admin = verify(&hs256(), &token("ops", &[Role::Admin], 60)).unwrap();
    assert!(admin.admin && !admin.customer && admin.user_id.is_none());
}

#[test]
fn expired_tokens_are_refused_as_expired_past_the_leeway() {
    let now = chrono::Utc::now().timestamp();
    let mut old = claims(&Uuid::now_v7().to_string());
    old["exp"] = (now - 120).into();
    let token = forge(
        serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        old.clone(),
        Some(SECRET.as_bytes()),
    );
    assert_eq!(verify(&hs256(), &token), Err(AuthError::Expired));
    // Within the 30 s leeway it still holds.
    old["exp"] = (now - 10).into();
    let token = forge(
        serde_json::json!({"alg": "HS256"}),
        old,
        Some(SECRET.as_bytes()),
    );
    assert!(verify(&hs256(), &token).is_ok());
}

#[test]
fn tokens_not_valid_yet_are_refused() {
    let mut early = claims(&Uuid::now_v7().to_string());
    early["nbf"] = (chrono::Utc::now().timestamp() + 600).into();
    let token = forge(
        serde_json::json!({"alg": "HS256"}),
        early,
        Some(SECRET.as_bytes()),
    );
    assert!(matches!(
        verify(&hs256(), &token),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn alg_none_wrong_secret_issuer_and_audience_are_refused() {
    let sub = Uuid::now_v7().to_string();
    let cases = [
        forge(serde_json::json!({"alg": "none"}), claims(&sub), None),
        forge(serde_json::json!({"alg": "HS256"}), claims(&sub), None),
        forge(
            serde_json::json!({"alg": "HS256"}),
            claims(&sub),
            Some(b"another secret of thirty-two bytes!!"),
        ),
        forge(
            serde_json::json!({"alg": "HS384"}),
            claims(&sub),
            Some(SECRET.as_bytes()),
        ),
        forge(
            serde_json::json!({"alg": "HS256"}),
            {
                let mut c = claims(&sub);
                c["aud"] = "someone-else".into();
                c
            },
            Some(SECRET.as_bytes()),
        ),
        forge(
            serde_json::json!({"alg": "HS256"}),
            {
                let mut c = claims(&sub);
                c["iss"] = "elsewhere".into();
                c
            },
            Some(SECRET.as_bytes()),
        ),
        forge(
            serde_json::json!({"alg": "HS256"}),
            {
                let mut c = claims(&sub);
                c.as_object_mut().unwrap().remove("exp");
                c
            },
            Some(SECRET.as_bytes()),
        ),
        // A customer must be a user id.
        forge(
            serde_json::json!({"alg": "HS256"}),
            claims("not-a-uuid"),
            Some(SECRET.as_bytes()),
        ),
    ];
    for token in cases {
        assert!(
            matches!(verify(&hs256(), &token), Err(AuthError::Invalid(_))),
            "accepted {token}"
        );
    }
}

#[test]
fn an_rs256_verifier_refuses_an_hs256_token_signed_with_its_public_key() {
    // Algorithm confusion: the public key is known to everyone, so an HS256 token "signed"
    // with it must not pass a verifier pinned to RS256.
    let dir = std::env::temp_dir().join(format!("orderflow-auth-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("public.pem");
    std::fs::write(&path, include_str!("fixtures/rs256-public.pem")).unwrap();
    let auth = AuthArgs {
        algorithm: AuthAlgorithm::Rs256,
        secret: None,
        public_key_file: Some(path),
        ..AuthArgs::with_secret("")
    }
    .auth()
    .unwrap();
    let forged = forge(
        serde_json::json!({"alg": "HS256"}),
        claims(&Uuid::now_v7().to_string()),
        Some(include_bytes!("fixtures/rs256-public.pem")),
    );
    assert!(matches!(verify(&auth, &forged), Err(AuthError::Invalid(_))));
    // A token the provider signed passes.
    let now = chrono::Utc::now().timestamp();
    let signed = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({"sub": "ops", "roles": ["admin"], "iss": "orderflow", "aud": "orderflow", "exp": now + 60}),
        &EncodingKey::from_rsa_pem(include_bytes!("fixtures/rs256-private.pem")).unwrap(),
    )
    .unwrap();
    assert!(verify(&auth, &signed).unwrap().admin);
}

#[test]
fn a_jwks_verifier_picks_the_key_by_kid() {
    let dir = std::env::temp_dir().join(format!("orderflow-auth-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, include_str!("fixtures/es256-jwks.json")).unwrap();
    let auth = AuthArgs {
        algorithm: AuthAlgorithm::Es256,
        secret: None,
        jwks_file: Some(path),
        ..AuthArgs::with_secret("")
    }
    .auth()
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let body = serde_json::json!({"sub": Uuid::now_v7().to_string(), "roles": ["customer"], "iss": "orderflow", "aud": "orderflow", "exp": now + 60});
    let key = EncodingKey::from_ec_pem(include_bytes!("fixtures/es256-private.pem")).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("orderflow-test".into());
    let signed = jsonwebtoken::encode(&header, &body, &key).unwrap();
    assert!(verify(&auth, &signed).unwrap().customer);
    header.kid = Some("unknown".into());
    let unknown = jsonwebtoken::encode(&header, &body, &key).unwrap();
    assert!(matches!(
        verify(&auth, &unknown),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn jwks_keys_for_encryption_or_another_algorithm_are_not_used() {
    let dir = std::env::temp_dir().join(format!("orderflow-auth-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/es256-jwks.json")).unwrap();
    for (field, value) in [("use", "enc"), ("alg", "ES384")] {
        let mut set = fixture.clone();
        set["keys"][0][field] = value.into();
        let path = dir.join(format!("{field}.json"));
        std::fs::write(&path, set.to_string()).unwrap();
        let refused = AuthArgs {
            algorithm: AuthAlgorithm::Es256,
            secret: None,
            jwks_file: Some(path),
            ..AuthArgs::with_secret("")
        }
        .auth();
        assert!(
            refused.is_err(),
            "a JWKS whose only key has {field} {value} was used"
        );
    }
}

#[test]
fn misconfigured_keys_refuse_to_start() {
    assert!(AuthArgs::with_secret("short").auth().is_err());
    let none = AuthArgs {
        secret: None,
        ..AuthArgs::with_secret("")
    };
    assert!(none.auth().unwrap_err().contains("--insecure-no-auth"));
    let off = AuthArgs {
        insecure_no_auth: true,
        ..none
    };
    assert!(matches!(off.auth(), Ok(Auth::Off)));
    let rs_with_secret = AuthArgs {
        algorithm: AuthAlgorithm::Rs256,
        ..AuthArgs::with_secret(SECRET)
    };
    assert!(rs_with_secret.auth().is_err());
}

#[test]
fn authorization_headers_need_the_bearer_scheme() {
    let auth = hs256();
    let mut headers = HeaderMap::new();
    assert_eq!(auth.caller(&headers), Ok(Caller::Anonymous));
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic dXNlcjpwYXNz"),
    );
    assert!(matches!(auth.caller(&headers), Err(AuthError::Invalid(_))));
    let good = token("ops", &[Role::Admin], 60);
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer {good}")).unwrap(),
    );
    assert!(auth.caller(&headers).unwrap().is_admin());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Random bytes never panic the parser and are never accepted.
        #[test]
        fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Auth::On(verifier) = hs256() {
                prop_assert!(verifier.verify(&text).is_err());
            }
        }

        /// Random dot-separated base64 parts (valid-looking shape) are never accepted.
        #[test]
        fn random_jwt_shaped_strings_are_refused(
            a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,90}"
        ) {
            if let Auth::On(verifier) = hs256() {
                let token = format!("{a}.{b}.{c}");
                prop_assert!(verifier.verify(&token).is_err());
            }
        }

        /// Any change to a valid token (a byte replaced, inserted or removed) makes it
        /// refused, never a panic.
        #[test]
        fn mutated_tokens_are_refused(at in any::<prop::sample::Index>(), byte in any::<u8>(), how in 0u8..3) {
            let good = token(&Uuid::nil().to_string(), &[Role::Admin, Role::Customer], 600);
            let mut bytes = good.clone().into_bytes();
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            prop_assume!(text != good);
            if let Auth::On(verifier) = hs256() {
                let verdict = verifier.verify(&text);
                // base64url without padding has spare bits in its last character: a change
                // there can decode to the same bytes, so the token is still the same token.
                if let Ok(principal) = &verdict {
                    prop_assert_eq!(&principal.sub, &Uuid::nil().to_string());
                    prop_assert!(equivalent(&good, &text), "a changed token was accepted: {}", text);
                }
            }
        }
    }

    /// Whether two tokens decode to the same header, claims and signature bytes.
    fn equivalent(a: &str, b: &str) -> bool {
        use base64::Engine as _;
        let decode = |token: &str| -> Option<Vec<Vec<u8>>> {
            token
                .split('.')
                .map(|part| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(part)
                        .ok()
                })
                .collect()
        };
        decode(a).is_some() && decode(a) == decode(b)
    }
}
