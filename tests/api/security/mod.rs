//! The defences that need a server configured for them: rate limits (shared through Redis,
//! per instance without it), persisted queries, production GraphQL settings, CORS, headers,
//! timeouts, key rotation and session revocation.

use std::time::Duration;

use evently::config::RateLimit;
use evently::db::models::Role;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::operation_errors;
use crate::support::operations::{allow_list, sha256};
use crate::support::{BOOK, OwnRedis, TEST_JWT_SECRET, TestApp, claims, error_code, sign};

mod http_edge;
mod operations;
mod rate_limits;
mod sessions;

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
const REGISTER: &str =
    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";

fn login(email: &str, password: &str) -> Value {
    json!({ "input": { "email": email, "password": password } })
}
