//! The configuration's checks, through `Config::from_lookup` (no process environment).

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
}

#[test]
fn database_url_is_required() {
    let err = config(&[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "DATABASE_URL is required (see README, \"Configuration\")"
    );
}

#[test]
fn production_requires_a_jwt_secret() {
    let err = config(&[
        ("EVENTLY_ENV", "production"),
        ("DATABASE_URL", "postgres://db/x"),
    ])
    .unwrap_err();
    assert!(matches!(err, ConfigError::Missing("JWT_SECRET")), "{err}");
}

#[test]
fn production_refuses_secrets_published_in_the_repository() {
    let published = [
        // docker-compose.yml's old default, the development fallback, tests and bench.
        "change-me-to-a-long-random-secret-of-32-chars-or-more",
        DEVELOPMENT_JWT_SECRET,
        "test-secret-test-secret-test-secret-0123",
        "bench-only-secret-bench-only-secret-0000",
        "rotated-secret-rotated-secret-rotated-01",
        "an-old-secret-of-at-least-32-characters",
        "a-production-secret-of-32-characters",
        // Placeholders of the same kind.
        "please-CHANGE_ME-before-going-live-0123456",
        "jwt-secret-for-the-example-deployment-42",
        "dev-secret-dev-secret-dev-secret-dev-secret",
    ];
    let db = ("DATABASE_URL", "postgres://h/db");
    for secret in published {
        let err = config(&[db, ("EVENTLY_ENV", "production"), ("JWT_SECRET", secret)])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("JWT_SECRET has an invalid value"),
            "{secret}: {err}"
        );
        assert!(!err.contains(secret), "secrets stay hidden: {err}");
        // A retired key must not be a published one either.
        let previous = format!("k0:{secret}");
        let err = config(&[
            db,
            ("EVENTLY_ENV", "production"),
            ("JWT_SECRET", "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4"),
            ("JWT_PREVIOUS_SECRETS", &previous),
        ])
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("JWT_PREVIOUS_SECRETS"), "{secret}: {err}");
        assert!(!err.contains(secret), "secrets stay hidden: {err}");
        // Development (and the test suite) may use them.
        config(&[db, ("JWT_SECRET", secret)]).unwrap();
    }
    let random = "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4";
    config(&[db, ("EVENTLY_ENV", "production"), ("JWT_SECRET", random)]).unwrap();
}

#[test]
fn development_falls_back_to_a_known_secret() {
    let config = config(&[("DATABASE_URL", "postgres://db/x")]).unwrap();
    assert!(config.uses_development_secret());
    assert_eq!(config.env, Environment::Development);
}

#[test]
fn invalid_values_name_the_variable_and_hide_secrets() {
    let err = config(&[("DATABASE_URL", "mysql://u:pw@h/db")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("DATABASE_URL has an invalid value"),
        "{err}"
    );
    assert!(!err.contains("pw"), "{err}");
    let err = config(&[("DATABASE_URL", "postgres://h/db"), ("JWT_SECRET", "short")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at least 32") && !err.contains("short"),
        "{err}"
    );
    let err = config(&[
        ("DATABASE_URL", "postgres://h/db"),
        ("DATABASE_POOL_SIZE", "many"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("DATABASE_POOL_SIZE"), "{err}");
    let err = config(&[
        ("DATABASE_URL", "postgres://h/db"),
        ("WS_PING_INTERVAL_SECS", "30"),
        ("WS_IDLE_TIMEOUT_SECS", "20"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("WS_IDLE_TIMEOUT_SECS"), "{err}");
    let err = config(&[
        ("DATABASE_URL", "postgres://h/db"),
        ("WS_INIT_TIMEOUT_SECS", "0"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("WS_INIT_TIMEOUT_SECS"), "{err}");
    assert!(
        config(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("EVENTLY_ENV", "staging")
        ])
        .is_err()
    );
}

#[test]
fn production_hides_the_schema_and_allows_no_other_origin_by_default() {
    let production = config(&[
        ("EVENTLY_ENV", "production"),
        ("DATABASE_URL", "postgres://h/db"),
        ("JWT_SECRET", "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4"),
    ])
    .unwrap();
    assert!(!production.graphql.introspection && !production.graphql.suggestions);
    assert_eq!(production.cors_allowed_origins, Some(vec![]));
    let development = config(&[("DATABASE_URL", "postgres://h/db")]).unwrap();
    assert!(development.graphql.introspection && development.graphql.suggestions);
    assert_eq!(development.cors_allowed_origins, None);
    let overridden = config(&[
        ("EVENTLY_ENV", "production"),
        ("DATABASE_URL", "postgres://h/db"),
        ("JWT_SECRET", "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4"),
        ("GRAPHQL_INTROSPECTION", "true"),
        (
            "CORS_ALLOWED_ORIGINS",
            "https://a.example, https://b.example/",
        ),
    ])
    .unwrap();
    assert!(overridden.graphql.introspection);
    assert_eq!(
        overridden.cors_allowed_origins,
        Some(vec!["https://a.example".into(), "https://b.example".into()])
    );
}

#[test]
fn rate_limits_are_count_per_seconds_or_off() {
    let db = ("DATABASE_URL", "postgres://h/db");
    let limits = config(&[
        db,
        ("RATE_LIMIT_LOGIN", "5/30"),
        ("RATE_LIMIT_REQUESTS", "0"),
    ])
    .unwrap()
    .rate_limits;
    assert_eq!(limits.login, RateLimit::per(5, 30));
    assert_eq!(limits.requests, None);
    assert_eq!(limits.booking, RateLimit::per(30, 60));
    assert_eq!(limits.account, RateLimit::per(10, 300));
    for bad in ["5", "5/0", "0/60", "many/60", "5/60/2"] {
        let err = config(&[db, ("RATE_LIMIT_BOOKING", bad)]).unwrap_err();
        assert!(
            err.to_string().starts_with("RATE_LIMIT_BOOKING"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_listen_address_and_the_log_format_come_from_the_environment() {
    let db = ("DATABASE_URL", "postgres://h/db");
    assert_eq!(config(&[db]).unwrap().listen.to_string(), "127.0.0.1:8000");
    let listen = config(&[db, ("EVENTLY_LISTEN", "0.0.0.0:9000")]).unwrap();
    assert_eq!(listen.listen.to_string(), "0.0.0.0:9000");
    let err = config(&[db, ("EVENTLY_LISTEN", "localhost")]).unwrap_err();
    assert!(err.to_string().starts_with("EVENTLY_LISTEN"), "{err}");
    let telemetry = TelemetryConfig::from_lookup(|name| match name {
        "EVENTLY_LOG_FORMAT" => Some("json".into()),
        _ => None,
    });
    assert_eq!(
        telemetry,
        TelemetryConfig {
            filter: None,
            json: true,
            unknown_format: None,
            traces: false,
        }
    );
}

#[test]
fn logs_are_json_by_default_in_production_and_traces_need_an_endpoint() {
    let telemetry = |vars: &[(&str, &str)]| {
        TelemetryConfig::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    };
    assert!(!telemetry(&[]).json);
    assert!(telemetry(&[("LOG_FORMAT", "json")]).json);
    assert!(telemetry(&[("EVENTLY_ENV", "production")]).json);
    assert!(!telemetry(&[("EVENTLY_ENV", "production"), ("LOG_FORMAT", "text")]).json);
    let odd = telemetry(&[("LOG_FORMAT", "yaml")]);
    assert_eq!(
        (odd.json, odd.unknown_format.as_deref()),
        (false, Some("yaml"))
    );
    assert!(!telemetry(&[]).traces);
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    assert!(telemetry(&[endpoint]).traces);
    assert!(!telemetry(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).traces);
}

#[test]
fn previous_jwt_keys_and_proxies_are_checked() {
    let db = ("DATABASE_URL", "postgres://h/db");
    let old = "an-old-secret-of-at-least-32-characters";
    let config_with =
        |value: &str| config(&[db, ("JWT_KID", "k2"), ("JWT_PREVIOUS_SECRETS", value)]);
    let keys = config_with(&format!("k1:{old}"))
        .unwrap()
        .jwt_previous_secrets;
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].0.as_str(), keys[0].1.expose()), ("k1", old));
    for bad in ["k1:short", &format!("k2:{old}"), old, &format!(":{old}")] {
        let err = config_with(bad).unwrap_err().to_string();
        assert!(err.starts_with("JWT_PREVIOUS_SECRETS"), "{err}");
        assert!(!err.contains(old), "secrets stay hidden: {err}");
    }
    let proxies = config(&[db, ("TRUSTED_PROXIES", "10.0.0.1, ::1")]).unwrap();
    assert_eq!(proxies.trusted_proxies.len(), 2);
    assert!(config(&[db, ("TRUSTED_PROXIES", "10.0.0.0/8")]).is_err());
}

#[test]
fn shutdown_drain_and_grace_are_milliseconds_with_defaults() {
    let db = ("DATABASE_URL", "postgres://db/x");
    let defaults = config(&[db]).unwrap();
    assert_eq!(defaults.shutdown_drain, Duration::from_secs(2));
    assert_eq!(defaults.shutdown_grace, Duration::from_secs(30));
    let set = config(&[
        db,
        ("SHUTDOWN_DRAIN_MS", "0"),
        ("SHUTDOWN_GRACE_MS", "5000"),
    ])
    .unwrap();
    assert_eq!(set.shutdown_drain, Duration::ZERO);
    assert_eq!(set.shutdown_grace, Duration::from_secs(5));
    assert!(config(&[db, ("SHUTDOWN_DRAIN_MS", "soon")]).is_err());
}

#[test]
fn stripe_is_off_without_a_secret_key_and_needs_the_webhook_secret_with_one() {
    let db = ("DATABASE_URL", "postgres://h/db");
    assert!(config(&[db]).unwrap().stripe.is_none());
    let err = config(&[db, ("STRIPE_SECRET_KEY", "sk_test_51Abc")]).unwrap_err();
    assert!(
        matches!(err, ConfigError::Missing("STRIPE_WEBHOOK_SECRET")),
        "{err}"
    );
    let err = config(&[db, ("STRIPE_WEBHOOK_SECRET", "whsec_1")]).unwrap_err();
    assert!(
        matches!(err, ConfigError::Missing("STRIPE_SECRET_KEY")),
        "{err}"
    );
    let err = config(&[
        db,
        ("STRIPE_SECRET_KEY", "pk_test_51Abc"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_1"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("STRIPE_SECRET_KEY has an invalid value"),
        "{err}"
    );
    assert!(!err.contains("pk_test_51Abc"), "keys stay hidden: {err}");

    let stripe = config(&[
        db,
        ("STRIPE_SECRET_KEY", "sk_test_51Abc"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_1"),
    ])
    .unwrap()
    .stripe
    .unwrap();
    assert_eq!(stripe.api_base, "https://api.stripe.com");
    assert_eq!(stripe.webhook_tolerance, Duration::from_secs(300));
    assert_eq!(stripe.secret_key.expose(), "sk_test_51Abc");
    let shown = format!("{stripe:?}");
    assert!(
        !shown.contains("sk_test_51Abc") && !shown.contains("whsec_1"),
        "{shown}"
    );

    let stripe = config(&[
        db,
        ("STRIPE_SECRET_KEY", "sk_test_51Abc"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_1"),
        ("STRIPE_API_BASE", "http://127.0.0.1:12111/"),
        ("STRIPE_WEBHOOK_TOLERANCE_SECS", "60"),
    ])
    .unwrap()
    .stripe
    .unwrap();
    assert_eq!(stripe.api_base, "http://127.0.0.1:12111");
    assert_eq!(stripe.webhook_tolerance, Duration::from_secs(60));
}
