//! The payloads of `openapi/asyncapi.yaml` on the wire: parsing what devices send (telemetry,
//! status, command results) strictly, and encoding the commands we send them.
//!
//! Everything here faces devices we do not control, so parsing never panics and every refusal
//! has a reason that becomes a metric label.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Largest telemetry payload accepted.
pub const MAX_TELEMETRY_BYTES: usize = 16 * 1024;
/// Most values one telemetry message may carry.
pub const MAX_TELEMETRY_VALUES: usize = 64;
/// Longest value name.
const MAX_VALUE_NAME_CHARS: usize = 64;
/// Largest command result accepted: results are small answers, not bulk data.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest error text kept from a device.
const MAX_ERROR_CHARS: usize = 1024;
/// 9999-12-31T23:59:59.999Z: later timestamps cannot be written as RFC 3339.
const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Why a device's payload was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload larger than allowed")]
    TooLarge,
    #[error("payload is not JSON")]
    InvalidJson,
    #[error("payload has the wrong shape: {0}")]
    InvalidShape(&'static str),
    #[error("more than {MAX_TELEMETRY_VALUES} values")]
    TooManyValues,
}

impl PayloadError {
    /// The `reason` label of the dropped-payload metric.
    pub fn reason(self) -> &'static str {
        match self {
            PayloadError::TooLarge => "too_large",
            PayloadError::InvalidJson => "invalid_json",
            PayloadError::InvalidShape(_) => "invalid_payload",
            PayloadError::TooManyValues => "too_many_values",
        }
    }
}

/// A valid telemetry message.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// The device's own timestamp (unix ms), if it sent one.
    pub ts: Option<i64>,
    /// The `values` object, re-encoded as compact JSON.
    pub values_json: String,
}

/// Parses `{"ts"?: unix ms, "values": {name: number | bool | string}}`, at most 16 KiB and
/// 64 values.
pub fn parse_telemetry(payload: &[u8]) -> Result<Telemetry, PayloadError> {
    if payload.len() > MAX_TELEMETRY_BYTES {
        return Err(PayloadError::TooLarge);
    }
    let mut object = parse_object(payload)?;
    let ts = match object.remove("ts") {
        None => None,
        Some(ts) => Some(
            ts.as_i64()
                .filter(|ts| (0..=MAX_TS_MS).contains(ts))
                .ok_or(PayloadError::InvalidShape("`ts` must be unix milliseconds"))?,
        ),
    };
    let values = match object.remove("values") {
        Some(Value::Object(values)) => values,
        _ => return Err(PayloadError::InvalidShape("`values` must be an object")),
    };
    if !object.is_empty() {
        return Err(PayloadError::InvalidShape(
            "only `ts` and `values` are allowed",
        ));
    }
    if values.is_empty() {
        return Err(PayloadError::InvalidShape("`values` is empty"));
    }
    if values.len() > MAX_TELEMETRY_VALUES {
        return Err(PayloadError::TooManyValues);
    }
    for (name, value) in &values {
        let name_ok = (1..=MAX_VALUE_NAME_CHARS).contains(&name.chars().count())
            && !name.chars().any(char::is_control);
        if !name_ok {
            return Err(PayloadError::InvalidShape(
                "value names must be 1–64 printable characters",
            ));
        }
        if !matches!(value, Value::Number(_) | Value::Bool(_) | Value::String(_)) {
            return Err(PayloadError::InvalidShape(
                "values must be numbers, booleans or strings",
            ));
        }
    }
    let values_json = Value::Object(values).to_string();
    Ok(Telemetry { ts, values_json })
}

/// Parses a status payload: `online` or `offline`, bare or as a JSON string.
pub fn parse_status(payload: &[u8]) -> Result<bool, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::InvalidJson)?;
    match text.trim().trim_matches('"') {
        "online" => Ok(true),
        "offline" => Ok(false),
        _ => Err(PayloadError::InvalidShape(
            "status must be `online` or `offline`",
        )),
    }
}

/// How a device finished a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Succeeded,
    Failed,
    Rejected,
}

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub id: Uuid,
    pub status: ResultStatus,
    /// The `result` object as compact JSON, if the device sent one.
    pub result_json: Option<String>,
    pub error: Option<String>,
}

/// Parses `{"id", "status": "succeeded" | "failed" | "rejected", "result"?: {}, "error"?: "…"}`.
pub fn parse_command_result(payload: &[u8]) -> Result<CommandResult, PayloadError> {
    if payload.len() > MAX_RESULT_BYTES {
        return Err(PayloadError::TooLarge);
    }
    let object = parse_object(payload)?;
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(PayloadError::InvalidShape("`id` must be a command id"))?;
    let status = match object.get("status").and_then(Value::as_str) {
        Some("succeeded") => ResultStatus::Succeeded,
        Some("failed") => ResultStatus::Failed,
        Some("rejected") => ResultStatus::Rejected,
        _ => {
            return Err(PayloadError::InvalidShape(
                "`status` must be succeeded, failed or rejected",
            ));
        }
    };
    let result_json = match object.get("result") {
        None | Some(Value::Null) => None,
        Some(result @ Value::Object(_)) => Some(result.to_string()),
        Some(_) => return Err(PayloadError::InvalidShape("`result` must be an object")),
    };
    let error = match object.get("error") {
        None | Some(Value::Null) => None,
        // Without NUL characters, which PostgreSQL cannot store in text: a device's C string
        // sent with its terminator would otherwise lose the whole result.
        Some(Value::String(error)) => Some(
            error
                .chars()
                .filter(|c| *c != '\0')
                .take(MAX_ERROR_CHARS)
                .collect(),
        ),
        Some(_) => return Err(PayloadError::InvalidShape("`error` must be a string")),
    };
    Ok(CommandResult {
        id,
        status,
        result_json,
        error,
    })
}

fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(PayloadError::InvalidShape("not a JSON object")),
        Err(_) => Err(PayloadError::InvalidJson),
    }
}

/// What we publish on `devices/{id}/commands`.
#[derive(Debug, Serialize)]
pub struct CommandMessage<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub params: &'a Value,
    /// Unix ms; the device drops the command after it.
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_with_and_without_ts_parses() {
        let parsed = parse_telemetry(
            br#"{"ts": 1700000000000, "values": {"t": 21.5, "on": true, "mode": "eco"}}"#,
        )
        .unwrap();
        assert_eq!(parsed.ts, Some(1_700_000_000_000));
        let values: Value = serde_json::from_str(&parsed.values_json).unwrap();
        assert_eq!(values["t"], 21.5);
        assert_eq!(values["on"], true);
        assert_eq!(
            parse_telemetry(br#"{"values": {"t": 1}}"#).unwrap().ts,
            None
        );
    }

    #[test]
    fn telemetry_of_the_wrong_shape_is_refused_with_a_reason() {
        let cases: [(&[u8], &str); 10] = [
            (b"not json", "invalid_json"),
            (b"\xff\xfe", "invalid_json"),
            (b"[1, 2]", "invalid_payload"),
            (br#"{"values": [1]}"#, "invalid_payload"),
            (br#"{"values": {"t": {"nested": 1}}}"#, "invalid_payload"),
            (br#"{"values": {"t": null}}"#, "invalid_payload"),
            (
                br#"{"ts": "yesterday", "values": {"t": 1}}"#,
                "invalid_payload",
            ),
            (br#"{"ts": -5, "values": {"t": 1}}"#, "invalid_payload"),
            (br#"{"values": {"t": 1}, "extra": 1}"#, "invalid_payload"),
            (br#"{"values": {}}"#, "invalid_payload"),
        ];
        for (payload, reason) in cases {
            let err = parse_telemetry(payload).unwrap_err();
            assert_eq!(err.reason(), reason, "{}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn telemetry_over_the_limits_is_refused() {
        let many: Map<String, Value> = (0..=MAX_TELEMETRY_VALUES)
            .map(|i| (format!("v{i}"), Value::from(i)))
            .collect();
        let payload = serde_json::json!({ "values": many }).to_string();
        assert_eq!(
            parse_telemetry(payload.as_bytes()),
            Err(PayloadError::TooManyValues)
        );
        let big = serde_json::json!({ "values": { "s": "x".repeat(MAX_TELEMETRY_BYTES) } });
        assert_eq!(
            parse_telemetry(big.to_string().as_bytes()),
            Err(PayloadError::TooLarge)
        );
    }

    #[test]
    fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_telemetry(deep.as_bytes()).is_err());
    }

    /// Found by the `telemetry` fuzz target (tests/fuzz): without serde_json's
    /// `float_roundtrip` feature its float parser is not correctly rounded, and these long
    /// decimals were stored a few ulps away from the value sent. The value parsed from the
    /// payload, encoded as we store it and parsed again, must be the very same `f64`.
    #[test]
    fn long_decimals_are_stored_exactly_as_sent_and_parse_back_to_the_same_value() {
        let nines = format!("9{}1.5", "3".repeat(119));
        for sent_text in [
            "19999999999997547363.5",
            nines.as_str(),
            "0.30000000000000004441",
            "2.2250738585072011e-308",
        ] {
            // Rust's own parser is correctly rounded: the value the device meant.
            let sent: f64 = sent_text.parse().unwrap();
            let payload = format!(r#"{{"values": {{"v": {sent_text}}}}}"#);
            let first = parse_telemetry(payload.as_bytes()).unwrap();
            let again = format!(r#"{{"values":{}}}"#, first.values_json);
            let again = parse_telemetry(again.as_bytes()).unwrap();
            for stored in [&first.values_json, &again.values_json] {
                let value: Value = serde_json::from_str(stored).unwrap();
                let stored = value["v"].as_f64().unwrap();
                assert_eq!(
                    stored.to_bits(),
                    sent.to_bits(),
                    "{sent_text} was sent, {stored} stored"
                );
            }
        }
    }

    #[test]
    fn a_result_error_keeps_its_text_without_nul_characters() {
        let id = Uuid::new_v4();
        let parsed = parse_command_result(
            format!(r#"{{"id": "{id}", "status": "failed", "error": "stuck\u0000\u0000"}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.error.as_deref(), Some("stuck"));
    }

    #[test]
    fn status_is_online_or_offline_bare_or_quoted() {
        assert_eq!(parse_status(b"online"), Ok(true));
        assert_eq!(parse_status(b"\"offline\""), Ok(false));
        assert!(parse_status(b"maybe").is_err());
    }

    #[test]
    fn command_results_parse_and_bad_ones_are_refused() {
        let id = Uuid::new_v4();
        let parsed = parse_command_result(
            format!(r#"{{"id": "{id}", "status": "succeeded", "result": {{"on": true}}}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.id, id);
        assert_eq!(parsed.status, ResultStatus::Succeeded);
        assert_eq!(parsed.result_json.as_deref(), Some(r#"{"on":true}"#));
        for bad in [
            r#"{"id": "nope", "status": "succeeded"}"#.to_owned(),
            format!(r#"{{"id": "{id}", "status": "sent"}}"#),
            format!(r#"{{"id": "{id}", "status": "failed", "result": 5}}"#),
            format!(r#"{{"id": "{id}", "status": "failed", "error": 5}}"#),
        ] {
            assert!(parse_command_result(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
