//! The device topics of `openapi/asyncapi.yaml`, and which of them a device may use: the per-device
//! ACL that the embedded broker enforces and that a Mosquitto `acl_file` mirrors.

use uuid::Uuid;

/// What a message on a device topic is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Telemetry,
    Status,
    Commands,
    CommandResult,
}

impl TopicKind {
    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Status => "status",
            TopicKind::Commands => "commands",
            TopicKind::CommandResult => "result",
        }
    }
}

/// A parsed `devices/{device_id}/…` topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTopic {
    pub device_id: Uuid,
    pub kind: TopicKind,
}

impl DeviceTopic {
    /// Parses a concrete topic name; anything else (other prefixes, wildcards, ids that are
    /// not UUIDs in their canonical lower-case form) is `None`.
    pub fn parse(topic: &str) -> Option<DeviceTopic> {
        let rest = topic.strip_prefix("devices/")?;
        let (id, kind) = rest.split_once('/')?;
        let kind = match kind {
            "telemetry" => TopicKind::Telemetry,
            "status" => TopicKind::Status,
            "commands" => TopicKind::Commands,
            "commands/result" => TopicKind::CommandResult,
            _ => return None,
        };
        let device_id = canonical_device_id(id)?;
        Some(DeviceTopic { device_id, kind })
    }
}

/// A device id as it appears in topics and MQTT usernames: the lower-case hyphenated UUID.
/// Other spellings of the same UUID are refused so that one device has exactly one topic
/// tree (otherwise `devices/ABC…` could dodge an ACL written for `devices/abc…`).
pub fn canonical_device_id(id: &str) -> Option<Uuid> {
    let parsed = Uuid::parse_str(id).ok()?;
    (parsed.hyphenated().to_string() == id).then_some(parsed)
}

pub fn telemetry(device_id: Uuid) -> String {
    format!("devices/{device_id}/telemetry")
}

pub fn status(device_id: Uuid) -> String {
    format!("devices/{device_id}/status")
}

pub fn commands(device_id: Uuid) -> String {
    format!("devices/{device_id}/commands")
}

pub fn command_result(device_id: Uuid) -> String {
    format!("devices/{device_id}/commands/result")
}

/// The topics a device may publish to: its own three upstream ones.
pub fn device_publish_topics(device_id: Uuid) -> [String; 3] {
    [
        telemetry(device_id),
        status(device_id),
        command_result(device_id),
    ]
}

/// A device may publish only to its own three upstream topics.
pub fn device_may_publish(device_id: Uuid, topic: &str) -> bool {
    matches!(
        DeviceTopic::parse(topic),
        Some(DeviceTopic { device_id: id, kind: TopicKind::Telemetry | TopicKind::Status | TopicKind::CommandResult })
            if id == device_id
    )
}

/// A device may subscribe only to its own commands, spelled out (no wildcards, no shares).
pub fn device_may_subscribe(device_id: Uuid, filter: &str) -> bool {
    filter == commands(device_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0b6e7a52-3c1f-4d1e-9b7a-2f4a1c9d8e01";
    const B: &str = "7d2c9f10-5a4b-4c3d-8e2f-1a0b9c8d7e6f";

    fn id(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    #[test]
    fn device_topics_parse_into_id_and_kind() {
        let topic = DeviceTopic::parse(&format!("devices/{A}/commands/result")).unwrap();
        assert_eq!(topic.device_id, id(A));
        assert_eq!(topic.kind, TopicKind::CommandResult);
        assert_eq!(
            DeviceTopic::parse(&format!("devices/{A}/telemetry"))
                .unwrap()
                .kind,
            TopicKind::Telemetry
        );
    }

    #[test]
    fn other_topics_and_other_spellings_of_an_id_do_not_parse() {
        for topic in [
            format!("devices/{A}/telemetry/extra"),
            format!("devices/{}/telemetry", A.to_uppercase()),
            format!("devices/{}/telemetry", A.replace('-', "")),
            "devices/+/telemetry".to_owned(),
            "devices/#".to_owned(),
            format!("other/{A}/telemetry"),
            "devices//telemetry".to_owned(),
        ] {
            assert_eq!(DeviceTopic::parse(&topic), None, "{topic}");
        }
    }

    #[test]
    fn a_device_publishes_only_to_its_own_upstream_topics() {
        assert!(device_may_publish(id(A), &telemetry(id(A))));
        assert!(device_may_publish(id(A), &status(id(A))));
        assert!(device_may_publish(id(A), &command_result(id(A))));
        assert!(!device_may_publish(id(A), &commands(id(A))));
        assert!(!device_may_publish(id(A), &telemetry(id(B))));
        assert!(!device_may_publish(id(A), &command_result(id(B))));
        assert!(!device_may_publish(id(A), "devices/+/telemetry"));
    }

    #[test]
    fn a_device_subscribes_only_to_its_own_commands_without_wildcards() {
        assert!(device_may_subscribe(id(A), &commands(id(A))));
        for filter in [
            commands(id(B)),
            "devices/+/commands".to_owned(),
            "#".to_owned(),
            format!("devices/{A}/#"),
            telemetry(id(A)),
        ] {
            assert!(!device_may_subscribe(id(A), &filter), "{filter}");
        }
    }
}
