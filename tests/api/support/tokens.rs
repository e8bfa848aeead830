//! Access tokens made by hand, signed as the server signs them or deliberately not.

use serde_json::{Value, json};
use uuid::Uuid;

/// Signs `claims` as a token the server would issue, unless told otherwise.
pub fn sign(
    claims: &Value,
    kid: Option<&str>,
    secret: &str,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// The claims of a valid access token for `user` in `session`.
pub fn claims(user: Uuid, session: Uuid) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": user, "sid": session, "role": "USER", "jti": Uuid::new_v4(),
        "iat": now, "nbf": now, "exp": now + 900, "iss": "evently", "aud": "evently-api",
    })
}
