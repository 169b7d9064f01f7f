//! The firmware's command logic, apart from any connection: which commands it drops, which it
//! has seen before, and how it answers the ones it carries out.
//!
//! Kept free of I/O so the rules `openapi/asyncapi.yaml` sets for devices (drop a command past its
//! `expires_at`, answer each command id once) are tested directly.

use std::collections::{HashSet, VecDeque};

use serde_json::{Value, json};

use crate::config::Behaviour;

/// Command ids a device remembers for spotting duplicates: a redelivery comes within seconds
/// of the original, so the last few hundred are plenty, and memory stays bounded.
const REMEMBERED_IDS: usize = 512;

/// A command as the server publishes it on `devices/{id}/commands`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub name: String,
    pub params: Value,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// Why a payload on the commands topic is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a command: {0}")]
pub struct BadCommand(&'static str);

impl Command {
    /// Parses `{"id", "name", "params", "expires_at"}`; `params` may be missing or null.
    pub fn parse(payload: &[u8]) -> Result<Command, BadCommand> {
        let body: Value =
            serde_json::from_slice(payload).map_err(|_| BadCommand("payload is not JSON"))?;
        let text = |field: &'static str| {
            body.get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(BadCommand(field))
        };
        Ok(Command {
            id: text("id")?,
            name: text("name")?,
            params: match body.get("params") {
                None | Some(Value::Null) => json!({}),
                Some(params) => params.clone(),
            },
            expires_at: body
                .get("expires_at")
                .and_then(Value::as_i64)
                .ok_or(BadCommand("expires_at"))?,
        })
    }
}

/// How a device finished a command, as the `status` of its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Succeeded,
    Failed,
    Rejected,
}

impl Outcome {
    /// The `status` field of a result.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What the device does besides answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    SetRelay(bool),
    Reboot,
}

/// An answer for `devices/{id}/commands/result`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The command's id, so the server can match the answer.
    pub id: String,
    pub outcome: Outcome,
    /// What a succeeded command reports, such as the relay's new state.
    pub result: Option<Value>,
    /// For humans: why it failed or was rejected.
    pub error: Option<String>,
}

impl Reply {
    fn succeeded(command: &Command, result: Value) -> Reply {
        Reply {
            id: command.id.clone(),
            outcome: Outcome::Succeeded,
            result: Some(result),
            error: None,
        }
    }

    fn refused(command: &Command, outcome: Outcome, error: String) -> Reply {
        Reply {
            id: command.id.clone(),
            outcome,
            result: None,
            error: Some(error),
        }
    }

    /// `{"id", "status", "result"?, "error"?}`.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut body = json!({ "id": self.id, "status": self.outcome.as_str() });
        if let Some(result) = &self.result {
            body["result"] = result.clone();
        }
        if let Some(error) = &self.error {
            body["error"] = Value::String(error.clone());
        }
        body.to_string().into_bytes()
    }
}

/// What to do with a received command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Past its `expires_at`: dropped unanswered, as `openapi/asyncapi.yaml` asks.
    Expired,
    /// A command id already handled: answered once already (or deliberately not at all).
    Duplicate,
    /// A silent device never answers.
    Ignored,
    /// Answer with `reply`, then do `action`.
    Answer { reply: Reply, action: Action },
}

/// One device's command handling.
#[derive(Debug)]
pub struct Firmware {
    behaviour: Behaviour,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl Firmware {
    /// Firmware that has seen no command yet and answers as `behaviour` says.
    pub fn new(behaviour: Behaviour) -> Firmware {
        Firmware {
            behaviour,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Decides what to do with `command`, received when the device's clock read `now_ms`.
    pub fn decide(&mut self, command: &Command, now_ms: i64) -> Decision {
        if !self.remember(&command.id) {
            return Decision::Duplicate;
        }
        if now_ms > command.expires_at {
            return Decision::Expired;
        }
        match self.behaviour {
            Behaviour::Silent => Decision::Ignored,
            Behaviour::Normal | Behaviour::Failing => self.answer(command, now_ms),
        }
    }

    fn answer(&self, command: &Command, now_ms: i64) -> Decision {
        let known = matches!(command.name.as_str(), "set_relay" | "reboot" | "ping");
        if !known {
            return Decision::Answer {
                reply: Reply::refused(
                    command,
                    Outcome::Rejected,
                    format!(
                        "unknown command {:?}: this device knows set_relay, reboot and ping",
                        command.name
                    ),
                ),
                action: Action::Nothing,
            };
        }
        if command.name == "set_relay" {
            let on = command.params.get("on").and_then(Value::as_bool);
            let Some(on) = on else {
                return Decision::Answer {
                    reply: Reply::refused(
                        command,
                        Outcome::Rejected,
                        "set_relay needs params {\"on\": true | false}".to_owned(),
                    ),
                    action: Action::Nothing,
                };
            };
            if self.behaviour == Behaviour::Failing {
                return failed(command, "the relay is stuck (simulated failure)");
            }
            return Decision::Answer {
                reply: Reply::succeeded(command, json!({ "on": on })),
                action: Action::SetRelay(on),
            };
        }
        if self.behaviour == Behaviour::Failing {
            return failed(command, "the device is faulty (simulated failure)");
        }
        match command.name.as_str() {
            "reboot" => Decision::Answer {
                reply: Reply::succeeded(command, json!({})),
                action: Action::Reboot,
            },
            _ => Decision::Answer {
                reply: Reply::succeeded(command, json!({ "device_time": now_ms })),
                action: Action::Nothing,
            },
        }
    }

    /// Records `id`; false if it was already there.
    fn remember(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.seen_order.len() == REMEMBERED_IDS
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.to_owned());
        self.seen_order.push_back(id.to_owned());
        true
    }
}

fn failed(command: &Command, error: &str) -> Decision {
    Decision::Answer {
        reply: Reply::refused(command, Outcome::Failed, error.to_owned()),
        action: Action::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn command(id: &str, name: &str, params: Value) -> Command {
        Command {
            id: id.to_owned(),
            name: name.to_owned(),
            params,
            expires_at: NOW + 5_000,
        }
    }

    fn answer(decision: Decision) -> (Reply, Action) {
        match decision {
            Decision::Answer { reply, action } => (reply, action),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_command_as_the_server_sends_it_parses() {
        let parsed = Command::parse(
            br#"{"id":"c1","name":"set_relay","params":{"on":true},"expires_at":1700000005000}"#,
        )
        .unwrap();
        assert_eq!(parsed, command("c1", "set_relay", json!({"on": true})));
        let bare = Command::parse(br#"{"id":"c2","name":"ping","expires_at":1}"#).unwrap();
        assert_eq!(bare.params, json!({}));
        assert!(Command::parse(b"nope").is_err());
        assert!(Command::parse(br#"{"id":"c3","name":"ping"}"#).is_err());
    }

    #[test]
    fn a_command_past_its_expiry_is_dropped_unanswered() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        let late = command("c1", "ping", json!({}));
        assert_eq!(
            firmware.decide(&late, late.expires_at + 1),
            Decision::Expired
        );
        let on_time = command("c2", "ping", json!({}));
        assert!(matches!(
            firmware.decide(&on_time, on_time.expires_at),
            Decision::Answer { .. }
        ));
    }

    #[test]
    fn a_second_delivery_of_one_command_id_is_not_answered_again() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        let once = command("c1", "set_relay", json!({"on": true}));
        assert!(matches!(
            firmware.decide(&once, NOW),
            Decision::Answer { .. }
        ));
        assert_eq!(firmware.decide(&once, NOW), Decision::Duplicate);
        assert_eq!(firmware.decide(&once, NOW + 1), Decision::Duplicate);
        let other = command("c2", "set_relay", json!({"on": true}));
        assert!(matches!(
            firmware.decide(&other, NOW),
            Decision::Answer { .. }
        ));
    }

    #[test]
    fn an_expired_command_delivered_again_is_still_a_duplicate() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        let late = command("c1", "ping", json!({}));
        assert_eq!(firmware.decide(&late, NOW + 10_000), Decision::Expired);
        assert_eq!(firmware.decide(&late, NOW + 10_000), Decision::Duplicate);
    }

    #[test]
    fn remembered_ids_are_bounded_and_the_oldest_are_forgotten() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        for i in 0..REMEMBERED_IDS + 10 {
            firmware.decide(&command(&format!("c{i}"), "ping", json!({})), NOW);
        }
        assert_eq!(firmware.seen.len(), REMEMBERED_IDS);
        assert_eq!(firmware.seen_order.len(), REMEMBERED_IDS);
        let recent = command(&format!("c{}", REMEMBERED_IDS + 9), "ping", json!({}));
        assert_eq!(firmware.decide(&recent, NOW), Decision::Duplicate);
    }

    #[test]
    fn set_relay_succeeds_with_the_new_state_and_switches_the_relay() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        let (reply, action) =
            answer(firmware.decide(&command("c1", "set_relay", json!({"on": true})), NOW));
        assert_eq!(reply.outcome, Outcome::Succeeded);
        assert_eq!(reply.result, Some(json!({"on": true})));
        assert_eq!(action, Action::SetRelay(true));
        let payload: Value = serde_json::from_slice(&reply.to_payload()).unwrap();
        assert_eq!(
            payload,
            json!({"id": "c1", "status": "succeeded", "result": {"on": true}})
        );
    }

    #[test]
    fn set_relay_without_a_boolean_is_rejected_with_an_error() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        for (i, params) in [json!({}), json!({"on": "yes"}), json!([1])]
            .into_iter()
            .enumerate()
        {
            let (reply, action) =
                answer(firmware.decide(&command(&format!("c{i}"), "set_relay", params), NOW));
            assert_eq!(reply.outcome, Outcome::Rejected);
            assert!(reply.error.is_some_and(|e| e.contains("on")));
            assert_eq!(action, Action::Nothing);
        }
    }

    #[test]
    fn ping_answers_with_the_device_time_and_reboot_reboots() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        let (reply, _) = answer(firmware.decide(&command("c1", "ping", json!({})), NOW));
        assert_eq!(reply.result, Some(json!({"device_time": NOW})));
        let (reply, action) = answer(firmware.decide(&command("c2", "reboot", json!({})), NOW));
        assert_eq!(reply.outcome, Outcome::Succeeded);
        assert_eq!(action, Action::Reboot);
    }

    #[test]
    fn an_unknown_command_is_rejected_with_an_error_text() {
        let mut firmware = Firmware::new(Behaviour::Normal);
        let (reply, action) = answer(firmware.decide(&command("c1", "fly", json!({})), NOW));
        assert_eq!(reply.outcome, Outcome::Rejected);
        assert!(reply.error.as_deref().is_some_and(|e| e.contains("fly")));
        assert_eq!(action, Action::Nothing);
        let payload: Value = serde_json::from_slice(&reply.to_payload()).unwrap();
        assert_eq!(payload["status"], "rejected");
        assert!(payload.get("result").is_none());
    }

    #[test]
    fn a_failing_device_fails_known_commands_and_still_rejects_unknown_ones() {
        let mut firmware = Firmware::new(Behaviour::Failing);
        for (i, name) in ["set_relay", "reboot", "ping"].into_iter().enumerate() {
            let (reply, action) =
                answer(firmware.decide(&command(&format!("c{i}"), name, json!({"on": true})), NOW));
            assert_eq!(reply.outcome, Outcome::Failed, "{name}");
            assert!(reply.error.is_some(), "{name}");
            assert_eq!(action, Action::Nothing, "{name}");
        }
        let (reply, _) = answer(firmware.decide(&command("c9", "fly", json!({})), NOW));
        assert_eq!(reply.outcome, Outcome::Rejected);
    }

    #[test]
    fn a_silent_device_ignores_commands_but_still_spots_duplicates() {
        let mut firmware = Firmware::new(Behaviour::Silent);
        let ping = command("c1", "ping", json!({}));
        assert_eq!(firmware.decide(&ping, NOW), Decision::Ignored);
        assert_eq!(firmware.decide(&ping, NOW), Decision::Duplicate);
    }
}
