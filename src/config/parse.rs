//! Parsing one setting's raw text, so that a bad value fails naming its variable and flag.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::ConfigError;

pub(super) fn invalid(variable: &'static str, flag: &'static str, problem: String) -> ConfigError {
    ConfigError {
        variable,
        flag,
        problem,
    }
}

/// `true` or `false`, so that a typo fails at start with the variable's name.
pub(super) fn boolean(
    variable: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<bool, ConfigError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(invalid(
            variable,
            flag,
            format!("{other:?} must be true or false"),
        )),
    }
}

/// A whole number from 1 up, or `default` when unset.
pub(super) fn count(
    variable: &'static str,
    flag: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<usize, ConfigError> {
    let text = non_empty(value).unwrap_or(default);
    text.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        invalid(
            variable,
            flag,
            format!("{text:?} must be a whole number from 1 up"),
        )
    })
}

/// A rate per minute: a whole number, where `0` means "no limit".
pub(super) fn rate(
    variable: &'static str,
    flag: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<Option<NonZeroU32>, ConfigError> {
    let text = non_empty(value).unwrap_or(default);
    text.parse::<u32>().map(NonZeroU32::new).map_err(|_| {
        invalid(
            variable,
            flag,
            format!("{text:?} must be a whole number (0 turns the limit off)"),
        )
    })
}

/// Comma-separated IP addresses or CIDR ranges; a bare address is a network of one.
pub(super) fn networks(
    variable: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<Vec<IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    invalid(
                        variable,
                        flag,
                        format!(
                            "{item:?} is not an IP address or CIDR range such as 10.0.0.0/8 or \
                             2001:db8::/32"
                        ),
                    )
                })
        })
        .collect()
}

pub(super) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub(super) fn socket_addr(
    variable: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<SocketAddr, ConfigError> {
    SocketAddr::from_str(value.trim()).map_err(|_| {
        invalid(
            variable,
            flag,
            format!("{value:?} is not an IP address and port such as 127.0.0.1:8080"),
        )
    })
}

/// A name the backend gives itself at the broker (share group, client id): 1–64 of
/// `a-z A-Z 0-9 - _ .`. That is one topic level without separators or wildcards, and a client
/// id that Mosquitto, EMQX and the embedded broker accept (MQTT 3.1.1 promises only 1–23
/// alphanumerics; all three take more).
pub(super) fn mqtt_name(
    variable: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<String, ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            variable,
            flag,
            format!("{value:?} must be 1–64 of a-z, A-Z, 0-9, `-`, `_`, `.`"),
        ))
    }
}

/// `embedded` (`None`) or `mqtt://host[:port]` (port 1883 by default).
pub(super) fn broker_address(value: &str) -> Result<Option<(String, u16)>, ConfigError> {
    let value = value.trim();
    if value == "embedded" {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "IOTBIND_MQTT_URL",
            "mqtt-url",
            format!("{value:?} is neither `embedded` nor `mqtt://host:port`"),
        )
    };
    let rest = value.strip_prefix("mqtt://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    )))
}

/// Seconds as a bare integer, or a human duration (`15m`, `30d`); zero is refused.
pub(super) fn duration(
    variable: &'static str,
    flag: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = non_empty(value).unwrap_or(default);
    let parsed = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|_| {
            invalid(
                variable,
                flag,
                format!("{raw:?} is not a number of seconds or a duration such as 15m"),
            )
        })?,
    };
    if parsed.is_zero() {
        return Err(invalid(
            variable,
            flag,
            "must be longer than zero".to_owned(),
        ));
    }
    Ok(parsed)
}
