//! Fuzzes the device topic parser and the ACL built on it: any topic name a device can put in
//! a PUBLISH or SUBSCRIBE. A topic that parses must be exactly the canonical spelling of its
//! device and kind (one topic tree per device, so no other spelling can dodge the ACL), and a
//! device may publish only to its own upstream topics and subscribe only to its commands.
#![no_main]

use iotbind::mqtt::topics::{
    self, DeviceTopic, TopicKind, canonical_device_id, device_may_publish, device_may_subscribe,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // MQTT topic names are UTF-8; the broker refuses anything else before we see it.
    let Ok(topic) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = canonical_device_id(topic) {
        assert_eq!(id.hyphenated().to_string(), topic);
    }
    match DeviceTopic::parse(topic) {
        Some(parsed) => {
            let id = parsed.device_id;
            let canonical = match parsed.kind {
                TopicKind::Telemetry => topics::telemetry(id),
                TopicKind::Status => topics::status(id),
                TopicKind::Commands => topics::commands(id),
                TopicKind::CommandResult => topics::command_result(id),
            };
            assert_eq!(canonical, topic, "a second spelling of a device topic");
            assert_eq!(
                device_may_publish(id, topic),
                parsed.kind != TopicKind::Commands
            );
            assert_eq!(
                device_may_subscribe(id, topic),
                parsed.kind == TopicKind::Commands
            );
        }
        None => {
            // Nothing that fails to parse is anyone's topic, least of all the device whose id
            // it spells some other way (upper case, no hyphens, braces).
            let spelled = topic
                .strip_prefix("devices/")
                .and_then(|rest| rest.split('/').next())
                .and_then(|id| uuid::Uuid::parse_str(id).ok());
            let device = spelled.unwrap_or(uuid::Uuid::from_u128(1));
            assert!(!device_may_publish(device, topic));
            assert!(!device_may_subscribe(device, topic));
        }
    }
});
