//! Fuzzes the command-result parser (`devices/{id}/commands/result`): any bytes a device can
//! publish. An accepted result must carry a command id, a final status, a `result` that
//! re-encodes to a JSON object, and an error text cut to 1024 characters without a NUL (which
//! PostgreSQL cannot store).
#![no_main]

use iotbind::mqtt::payload::{MAX_RESULT_BYTES, parse_command_result};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(result) = parse_command_result(data) else {
        return;
    };
    assert!(data.len() <= MAX_RESULT_BYTES);
    // The id came from the payload's `id` string, so that string is in the input.
    let sent: Value = serde_json::from_slice(data).expect("an accepted result is JSON");
    let sent_id = sent["id"]
        .as_str()
        .expect("an accepted result has a string id");
    assert_eq!(
        uuid::Uuid::parse_str(sent_id).expect("the id is a UUID"),
        result.id
    );
    if let Some(json) = &result.result_json {
        let value: Value = serde_json::from_str(json).expect("result re-encodes to valid JSON");
        assert!(value.is_object(), "result re-encodes to {value}");
    }
    if let Some(error) = &result.error {
        assert!(error.chars().count() <= 1024);
        assert!(!error.contains('\0'), "NUL kept in {error:?}");
    }
});
