//! The settings as an operator sets them: defaults, and one line naming the variable for
//! every bad value.

use std::num::NonZeroU32;
use std::time::Duration;

use super::parse::broker_address;
use super::*;

fn args() -> ConfigArgs {
    ConfigArgs::default()
}

#[test]
fn nothing_set_gives_the_documented_defaults() {
    let settings = Settings::from_args(&args()).unwrap();
    assert_eq!(settings.http.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(
        settings.database,
        DatabaseUrl::Sqlite("sqlite://iotbind.db?mode=rwc".into())
    );
    let BrokerSettings::Embedded(embedded) = &settings.mqtt.broker else {
        panic!("the embedded broker by default");
    };
    assert_eq!(embedded.listen.to_string(), "127.0.0.1:1883");
    assert_eq!(settings.environment, Environment::Development);
    assert!(settings.wechat_is_fake());
    assert_eq!(settings.tokens.access_ttl, Duration::from_secs(900));
    assert_eq!(
        settings.tokens.refresh_ttl,
        Duration::from_secs(30 * 24 * 3600)
    );
    assert_eq!(settings.tokens.bind_ticket_ttl, Duration::from_secs(600));
    assert_eq!(settings.tokens.refresh_reuse_grace, Duration::from_secs(10));
}

#[test]
fn the_backend_session_settings_default_to_a_clean_session_and_a_shared_subscription() {
    let external = |args: ConfigArgs| match Settings::from_args(&ConfigArgs {
        mqtt_url: Some("mqtt://broker:1883".into()),
        ..args
    })
    .unwrap()
    .mqtt
    .broker
    {
        BrokerSettings::External(external) => external,
        BrokerSettings::Embedded(_) => panic!("an external broker"),
    };
    let settings = external(args());
    assert_eq!(settings.client_id, None);
    assert!(settings.shared_subscription);
    let settings = external(ConfigArgs {
        mqtt_client_id: Some("iotbind-eu-1".into()),
        mqtt_shared_subscription: Some("false".into()),
        ..args()
    });
    assert_eq!(settings.client_id.as_deref(), Some("iotbind-eu-1"));
    assert!(!settings.shared_subscription);
}

#[test]
fn the_telemetry_queue_defaults_to_the_writers_capacity_and_takes_a_positive_count() {
    let settings = Settings::from_args(&args()).unwrap();
    assert_eq!(settings.telemetry_queue, 20_000);
    let settings = Settings::from_args(&ConfigArgs {
        telemetry_queue: Some("500".into()),
        ..args()
    })
    .unwrap();
    assert_eq!(settings.telemetry_queue, 500);
    for bad in ["0", "-1", "many", "1.5"] {
        let err = Settings::from_args(&ConfigArgs {
            telemetry_queue: Some(bad.into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_TELEMETRY_QUEUE", "{bad}");
    }
}

#[test]
fn a_bad_client_id_or_subscription_switch_names_its_variable() {
    let err = Settings::from_args(&ConfigArgs {
        mqtt_client_id: Some("two words".into()),
        ..args()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_MQTT_CLIENT_ID");
    let err = Settings::from_args(&ConfigArgs {
        mqtt_shared_subscription: Some("maybe".into()),
        ..args()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_MQTT_SHARED_SUBSCRIPTION");
}

#[test]
fn a_bad_address_names_its_variable() {
    let err = Settings::from_args(&ConfigArgs {
        http_addr: Some("localhost".into()),
        ..args()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_HTTP_ADDR");
    assert!(
        err.to_string()
            .starts_with("IOTBIND_HTTP_ADDR (--http-addr)")
    );
}

#[test]
fn durations_accept_seconds_and_human_units() {
    let settings = Settings::from_args(&ConfigArgs {
        access_ttl: Some("60".into()),
        refresh_ttl: Some("7d".into()),
        ..args()
    })
    .unwrap();
    assert_eq!(settings.tokens.access_ttl, Duration::from_secs(60));
    assert_eq!(
        settings.tokens.refresh_ttl,
        Duration::from_secs(7 * 24 * 3600)
    );
}

#[test]
fn a_zero_or_garbage_duration_is_refused() {
    for bad in ["0", "soon", "-5"] {
        let err = Settings::from_args(&ConfigArgs {
            bind_ticket_ttl: Some(bad.into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_BIND_TICKET_TTL", "value {bad}");
    }
}

#[test]
fn a_short_jwt_secret_is_refused_in_any_environment() {
    let err = Settings::from_args(&ConfigArgs {
        jwt_secret: Some("short".into()),
        ..args()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_JWT_SECRET");
}

#[test]
fn production_refuses_the_fake_wechat_api() {
    let err = Settings::from_args(&ConfigArgs {
        environment: Some("production".into()),
        jwt_secret: Some("x".repeat(40)),
        ..args()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_WECHAT_SECRET");
}

#[test]
fn production_refuses_a_missing_or_example_jwt_secret() {
    let production = ConfigArgs {
        environment: Some("production".into()),
        wechat_appid: Some("wx123".into()),
        wechat_secret: Some("s3cret".into()),
        ..args()
    };
    let err = Settings::from_args(&production).unwrap_err();
    assert_eq!(err.variable, "IOTBIND_JWT_SECRET");

    let err = Settings::from_args(&ConfigArgs {
        jwt_secret: Some(EXAMPLE_JWT_SECRET.into()),
        ..production.clone()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_JWT_SECRET");

    let ok = Settings::from_args(&ConfigArgs {
        jwt_secret: Some("a".repeat(48)),
        ..production
    });
    assert!(ok.is_ok());
}

#[test]
fn a_wechat_secret_without_an_appid_is_refused() {
    let err = Settings::from_args(&ConfigArgs {
        wechat_secret: Some("s3cret".into()),
        ..args()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_WECHAT_APPID");
}

#[test]
fn mqtt_urls_parse_host_and_port() {
    assert_eq!(
        broker_address("mqtt://broker.local:1884").unwrap(),
        Some(("broker.local".into(), 1884))
    );
    assert_eq!(
        broker_address("mqtt://127.0.0.1").unwrap(),
        Some(("127.0.0.1".into(), 1883))
    );
    assert_eq!(broker_address("embedded").unwrap(), None);
    assert!(broker_address("tcp://x:1").is_err());
    assert!(broker_address("mqtt://:1883").is_err());
}

#[test]
fn trusted_proxies_take_addresses_and_cidr_ranges_of_both_families() {
    let settings = Settings::from_args(&ConfigArgs {
        trusted_proxies: Some(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::1".into()),
        ..args()
    })
    .unwrap();
    let listed: Vec<String> = settings
        .http
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        listed,
        ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]
    );
    assert!(
        Settings::from_args(&args())
            .unwrap()
            .http
            .trusted_proxies
            .is_empty()
    );
    for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.1/8/1"] {
        let err = Settings::from_args(&ConfigArgs {
            trusted_proxies: Some(bad.into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_TRUSTED_PROXIES", "{bad}");
    }
}

#[test]
fn the_password_attempt_limit_defaults_to_20_and_0_turns_it_off() {
    let limit = |value: Option<&str>| {
        Settings::from_args(&ConfigArgs {
            password_attempts_per_minute: value.map(Into::into),
            ..args()
        })
        .map(|s| s.http.password_attempts_per_minute.map(NonZeroU32::get))
    };
    assert_eq!(limit(None).unwrap(), Some(20));
    assert_eq!(limit(Some("0")).unwrap(), None);
    assert_eq!(limit(Some("5")).unwrap(), Some(5));
    assert_eq!(
        limit(Some("lots")).unwrap_err().variable,
        "IOTBIND_PASSWORD_ATTEMPTS_PER_MINUTE"
    );
}

#[test]
fn production_refuses_a_backend_broker_password_under_32_bytes() {
    let production = ConfigArgs {
        environment: Some("production".into()),
        wechat_appid: Some("wx123".into()),
        wechat_secret: Some("s3cret".into()),
        jwt_secret: Some("a".repeat(48)),
        mqtt_username: Some("iotbind-backend".into()),
        ..args()
    };
    let err = Settings::from_args(&ConfigArgs {
        mqtt_password: Some("hunter2".into()),
        ..production.clone()
    })
    .unwrap_err();
    assert_eq!(err.variable, "IOTBIND_MQTT_PASSWORD");
    assert!(
        Settings::from_args(&ConfigArgs {
            mqtt_password: Some("p".repeat(32)),
            ..production
        })
        .is_ok()
    );
    // Development takes what it is given.
    assert!(
        Settings::from_args(&ConfigArgs {
            mqtt_password: Some("hunter2".into()),
            ..args()
        })
        .is_ok()
    );
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let settings = Settings::from_args(&ConfigArgs {
        jwt_secret: Some("super-secret-value-that-is-long-enough!!".into()),
        ..args()
    })
    .unwrap();
    assert!(!format!("{settings:?}").contains("super-secret-value"));
}
