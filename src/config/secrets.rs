//! Signing secrets: a type that keeps them out of `Debug` output, the development fallback, the
//! secrets production refuses (published in this repository, or placeholders by their words),
//! and the retired keys still accepted for verification.

use std::fmt;

use super::ConfigError;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Used only when EVENTLY_ENV=development and JWT_SECRET is unset.
pub(super) const DEVELOPMENT_JWT_SECRET: &str =
    "evently-development-secret-do-not-use-in-production";

/// Secrets written in this repository (the development fallback, docker-compose.yml's old
/// default, the tests' and the benchmark's): anyone can sign tokens with them, so production
/// refuses them.
const PUBLISHED_SECRETS: &[&str] = &[
    DEVELOPMENT_JWT_SECRET,
    "change-me-to-a-long-random-secret-of-32-chars-or-more",
    "test-secret-test-secret-test-secret-0123",
    "bench-only-secret-bench-only-secret-0000",
    "rotated-secret-rotated-secret-rotated-01",
    "another-secret-another-secret-0123456",
    "an-old-secret-of-at-least-32-characters",
    "a-production-secret-of-32-characters",
];

/// Words that mark a placeholder, as this repository's own example secrets use them. Matched
/// as whole words (between non-alphanumerics), so a random secret is all but never caught.
const PLACEHOLDER_WORDS: &[&str] = &[
    "change",
    "changeme",
    "example",
    "dev",
    "development",
    "test",
    "demo",
    "bench",
    "placeholder",
    "sample",
];

/// Whether production must refuse `secret`: published here, or a placeholder by its words.
pub(super) fn is_published_secret(secret: &str) -> bool {
    PUBLISHED_SECRETS.contains(&secret)
        || secret
            .to_ascii_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| PLACEHOLDER_WORDS.contains(&word))
}

pub(super) fn published_secret(name: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: "(hidden)".into(),
        reason: "is an example or placeholder secret (one written in the repository); \
                 in production use a random one, e.g. `openssl rand -base64 48`"
            .into(),
    }
}

/// `kid:secret,kid:secret`: keys that signed tokens still in circulation.
pub(super) fn parse_previous_secrets(
    list: &str,
    current_kid: &str,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "JWT_PREVIOUS_SECRETS",
        value: "(hidden)".into(),
        reason: reason.into(),
    };
    let mut keys = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (kid, secret) = entry
            .split_once(':')
            .ok_or_else(|| invalid("expected `kid:secret` entries separated by commas"))?;
        if kid.is_empty() || kid == current_kid {
            return Err(invalid(
                "each key id must be non-empty and differ from JWT_KID",
            ));
        }
        if secret.len() < 32 {
            return Err(invalid("every secret must be at least 32 characters"));
        }
        keys.push((kid.to_owned(), Secret::new(secret)));
    }
    Ok(keys)
}
