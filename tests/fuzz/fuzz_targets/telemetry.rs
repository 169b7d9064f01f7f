//! Fuzzes the telemetry and status parsers (`devices/{id}/telemetry`, `devices/{id}/status`):
//! any bytes a device can publish. Besides "never panics", it checks what the store relies
//! on: an accepted message fits the limits, its values re-encode to a JSON object of at most
//! 64 scalars with printable names, and that encoding parses again to itself.
#![no_main]

use iotbind::mqtt::payload::{
    MAX_TELEMETRY_BYTES, MAX_TELEMETRY_VALUES, parse_status, parse_telemetry,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// 9999-12-31T23:59:59.999Z in unix ms: the latest `ts` the HTTP side can print.
const MAX_TS_MS: i64 = 253_402_300_799_999;

fuzz_target!(|data: &[u8]| {
    // The status topic gets the same untrusted bytes; it has nothing to assert but its answer.
    let _ = parse_status(data);

    let Ok(telemetry) = parse_telemetry(data) else {
        return;
    };
    assert!(data.len() <= MAX_TELEMETRY_BYTES);
    if let Some(ts) = telemetry.ts {
        assert!((0..=MAX_TS_MS).contains(&ts), "ts {ts} out of range");
    }
    let values: Value =
        serde_json::from_str(&telemetry.values_json).expect("values re-encode to valid JSON");
    let values = values.as_object().expect("values re-encode to an object");
    assert!((1..=MAX_TELEMETRY_VALUES).contains(&values.len()));
    for (name, value) in values {
        let chars = name.chars().count();
        assert!((1..=64).contains(&chars), "name of {chars} characters");
        assert!(
            !name.chars().any(char::is_control),
            "control character in {name:?}"
        );
        assert!(
            matches!(value, Value::Number(_) | Value::Bool(_) | Value::String(_)),
            "non-scalar value {value}"
        );
    }

    // Re-parsing what we store is a fixed point: the compact encoding can be a little longer
    // than the input (`1E2` becomes `100.0`), so only when it still fits the size limit.
    let again = format!(r#"{{"values":{}}}"#, telemetry.values_json);
    if again.len() <= MAX_TELEMETRY_BYTES {
        let reparsed = parse_telemetry(again.as_bytes()).expect("stored values parse again");
        assert_eq!(reparsed.ts, None);
        let reparsed: Value = serde_json::from_str(&reparsed.values_json).expect("valid JSON");
        let reparsed = reparsed.as_object().expect("an object");
        assert_eq!(reparsed.len(), values.len());
        // Exact, floats included: serde_json's `float_roundtrip` feature (enabled by the
        // server crate) parses correctly rounded, so a stored number reads back as the value
        // that was sent (`seeds/telemetry/regress_float_*.json` once drifted by 1 and 2 ulps).
        for (name, value) in values {
            assert_eq!(value, &reparsed[name], "{name}: {value} changed");
        }
    }
});
