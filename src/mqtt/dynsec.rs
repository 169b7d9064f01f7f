//! Mosquitto's dynamic security plugin, driven over the backend's own MQTT connection: each
//! device gets a client (username = client id = device id, its MQTT password) and a role
//! holding exactly its own topics, so the broker itself refuses unknown devices and enforces
//! the topic rules.
//!
//! Requests go to `$CONTROL/dynamic-security/v1` as `{"commands": [...]}`; the plugin answers
//! every command on `…/v1/response`, echoing its `correlationData`, with an `error` when it
//! refused. A request is done when every one of its commands is answered; it fails when one
//! is refused or when the broker stays silent for [`ANSWER_TIMEOUT`]. Mosquitto 2.0 has no
//! `%u` in dynamic security ACLs, hence one role per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::client::MqttClient;
use super::topics;

/// Where requests go.
pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where the plugin answers.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// How long the broker has to answer a request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The role that gives the backend's own client every device topic.
pub const BACKEND_ROLE: &str = "iotbind-devices";
/// Commands per request message: a provisioning of 1,000 devices is 2,000 commands.
const COMMANDS_PER_MESSAGE: usize = 200;

/// What [`DynamicSecurity::ensure_backend_role`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendRole {
    /// The client held the role already.
    Held,
    /// The role was assigned now, and the broker dropped the client's connections.
    Assigned,
}

/// Why the broker did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DynsecError {
    #[error("the broker refused `{command}`: {reason}")]
    Refused { command: String, reason: String },
    #[error("the broker did not answer within {} s", ANSWER_TIMEOUT.as_secs())]
    Silent,
    #[error("cannot send to the broker: {0}")]
    Send(String),
}

/// Answers the plugin has yet to give, by correlation data.
#[derive(Default)]
pub struct PendingAnswers(Mutex<HashMap<String, oneshot::Sender<Answer>>>);

/// One command's answer: `Err` with the plugin's reason when it refused.
type Answer = Result<Value, String>;

impl PendingAnswers {
    fn expect(&self, correlation: String) -> oneshot::Receiver<Answer> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(correlation, sender);
        receiver
    }

    fn forget(&self, correlation: &str) {
        self.lock().remove(correlation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Answer>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands each answer of a response message to whoever waits for it.
    pub fn deliver(&self, payload: &Bytes) {
        let Ok(message) = serde_json::from_slice::<Value>(payload) else {
            tracing::warn!("an unreadable dynamic security response");
            return;
        };
        let answers = message["responses"].as_array().cloned().unwrap_or_default();
        for answer in answers {
            let Some(correlation) = answer["correlationData"].as_str() else {
                continue;
            };
            let Some(waiting) = self.lock().remove(correlation) else {
                continue;
            };
            let result = match answer["error"].as_str() {
                Some(reason) => Err(reason.to_owned()),
                None => Ok(answer),
            };
            let _ = waiting.send(result);
        }
    }
}

/// The dynamic security plugin of the broker the backend is connected to.
#[derive(Clone)]
pub struct DynamicSecurity {
    client: MqttClient,
    pending: Arc<PendingAnswers>,
}

/// A command and the name it goes by in errors.
struct Command(Value);

impl DynamicSecurity {
    /// Drives the plugin through `client`, whose connection hands answers to `pending`.
    pub fn new(client: MqttClient, pending: Arc<PendingAnswers>) -> DynamicSecurity {
        DynamicSecurity { client, pending }
    }

    /// Creates each device's role and client. On a refusal the devices created so far are
    /// removed again (best effort), so a failed provisioning leaves nothing behind.
    pub async fn create_devices(&self, devices: &[(Uuid, String)]) -> Result<(), DynsecError> {
        let commands = devices
            .iter()
            .flat_map(|(id, password)| {
                [
                    Command(create_device_role(*id)),
                    Command(create_device_client(*id, password)),
                ]
            })
            .collect();
        match self.run(commands).await {
            Ok(_) => Ok(()),
            Err(err) => {
                let ids: Vec<Uuid> = devices.iter().map(|(id, _)| *id).collect();
                self.delete_devices(&ids).await;
                Err(err)
            }
        }
    }

    /// Removes devices' clients and roles, ignoring refusals (some may never have existed).
    pub async fn delete_devices(&self, ids: &[Uuid]) {
        let commands: Vec<Command> = ids
            .iter()
            .flat_map(|id| {
                [
                    Command(json!({"command": "deleteClient", "username": id.to_string()})),
                    Command(json!({"command": "deleteRole", "rolename": device_role(*id)})),
                ]
            })
            .collect();
        for command in commands {
            let _ = self.run(vec![command]).await;
        }
    }

    /// Gives the device a new password and drops its session, so the old password stops
    /// working at once. A device the plugin does not know yet (provisioned before dynamic
    /// security was turned on) gets its role and client now.
    pub async fn set_device_password(&self, id: Uuid, password: &str) -> Result<(), DynsecError> {
        let change = self
            .run(vec![Command(json!({
                "command": "setClientPassword",
                "username": id.to_string(),
                "password": password,
            }))])
            .await;
        match change {
            Ok(_) => {
                // Disabling a client disconnects it; enabling lets it back in with the new
                // password.
                self.run(vec![
                    Command(json!({"command": "disableClient", "username": id.to_string()})),
                    Command(json!({"command": "enableClient", "username": id.to_string()})),
                ])
                .await
                .map(|_| ())
            }
            Err(DynsecError::Refused { reason, .. }) if reason.contains("not found") => {
                self.create_devices(&[(id, password.to_owned())]).await
            }
            Err(err) => Err(err),
        }
    }

    /// Makes sure the backend's client `username` holds the role over every device topic:
    /// creates the role when it is missing (an existing one is left as it is) and assigns it
    /// when the client does not hold it yet. Mosquitto disconnects every connection of a
    /// client whose roles change, this one included; see [`Self::backend_role_assigned`].
    pub async fn ensure_backend_role(
        &self,
        username: &str,
        share_group: &str,
    ) -> Result<BackendRole, DynsecError> {
        let exists = self
            .run(vec![Command(
                json!({"command": "getRole", "rolename": BACKEND_ROLE}),
            )])
            .await;
        match exists {
            Ok(_) => {}
            Err(DynsecError::Refused { reason, .. }) if reason.contains("not found") => {
                self.run(vec![Command(backend_role(share_group))]).await?;
                tracing::info!(
                    role = BACKEND_ROLE,
                    "created the backend's role over every device topic"
                );
            }
            Err(err) => return Err(err),
        }
        if self.backend_role_assigned(username).await? {
            return Ok(BackendRole::Held);
        }
        self.run(vec![Command(json!({
            "command": "addClientRole",
            "username": username,
            "rolename": BACKEND_ROLE,
        }))])
        .await?;
        tracing::info!(role = BACKEND_ROLE, %username, "gave the backend's client its role");
        Ok(BackendRole::Assigned)
    }

    /// Whether the client `username` holds [`BACKEND_ROLE`].
    pub async fn backend_role_assigned(&self, username: &str) -> Result<bool, DynsecError> {
        let client = self
            .run(vec![Command(
                json!({"command": "getClient", "username": username}),
            )])
            .await?;
        let roles = client
            .first()
            .and_then(|answer| answer["data"]["client"]["roles"].as_array())
            .cloned()
            .unwrap_or_default();
        Ok(roles
            .iter()
            .any(|role| role["rolename"].as_str() == Some(BACKEND_ROLE)))
    }

    /// Closes the connection this instance drives, for one-off uses.
    pub async fn close(self) {
        self.client.stop().await;
    }

    /// Sends `commands` and waits until each is answered, or [`ANSWER_TIMEOUT`].
    async fn run(&self, commands: Vec<Command>) -> Result<Vec<Value>, DynsecError> {
        let mut waiting = Vec::with_capacity(commands.len());
        let mut correlations = Vec::with_capacity(commands.len());
        let mut messages = Vec::new();
        for chunk in commands.chunks(COMMANDS_PER_MESSAGE) {
            let mut batch = Vec::with_capacity(chunk.len());
            for Command(command) in chunk {
                let correlation = Uuid::new_v4().simple().to_string();
                let mut command = command.clone();
                command["correlationData"] = json!(correlation);
                let name = command["command"].as_str().unwrap_or("?").to_owned();
                waiting.push((name, self.pending.expect(correlation.clone())));
                correlations.push(correlation);
                batch.push(command);
            }
            messages.push(json!({ "commands": batch }).to_string());
        }
        let result = self.send_and_wait(messages, waiting).await;
        for correlation in &correlations {
            self.pending.forget(correlation);
        }
        result
    }

    async fn send_and_wait(
        &self,
        messages: Vec<String>,
        waiting: Vec<(String, oneshot::Receiver<Answer>)>,
    ) -> Result<Vec<Value>, DynsecError> {
        for message in messages {
            self.client
                .publish(REQUEST_TOPIC.to_owned(), message.into_bytes())
                .map_err(|err| DynsecError::Send(err.to_string()))?;
        }
        let answers = async {
            let mut answers = Vec::with_capacity(waiting.len());
            for (command, receiver) in waiting {
                match receiver.await {
                    Ok(Ok(answer)) => answers.push(answer),
                    Ok(Err(reason)) => return Err(DynsecError::Refused { command, reason }),
                    Err(_) => return Err(DynsecError::Silent),
                }
            }
            Ok(answers)
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answers)
            .await
            .unwrap_or(Err(DynsecError::Silent))
    }
}

fn device_role(id: Uuid) -> String {
    format!("iotbind-device-{id}")
}

/// A device's role: exactly its own topics (publish telemetry, status and command results;
/// subscribe to its commands). Everything else is refused by the plugin's default access.
fn create_device_role(id: Uuid) -> Value {
    let send =
        |topic: String| json!({"acltype": "publishClientSend", "topic": topic, "allow": true});
    json!({
        "command": "createRole",
        "rolename": device_role(id),
        "acls": [
            send(topics::telemetry(id)),
            send(topics::status(id)),
            send(topics::command_result(id)),
            {"acltype": "subscribeLiteral", "topic": topics::commands(id), "allow": true},
        ],
    })
}

fn create_device_client(id: Uuid, password: &str) -> Value {
    json!({
        "command": "createClient",
        "username": id.to_string(),
        "clientid": id.to_string(),
        "password": password,
        "roles": [{"rolename": device_role(id)}],
    })
}

/// The backend's role: publish every device's commands, subscribe to every device topic (the
/// telemetry through its shared subscription too).
fn backend_role(share_group: &str) -> Value {
    json!({
        "command": "createRole",
        "rolename": BACKEND_ROLE,
        "acls": [
            {"acltype": "publishClientSend", "topic": "devices/+/commands", "allow": true},
            {"acltype": "subscribePattern", "topic": "devices/#", "allow": true},
            {"acltype": "subscribePattern", "topic": format!("$share/{share_group}/devices/+/telemetry"), "allow": true},
            {"acltype": "publishClientReceive", "topic": "devices/#", "allow": true},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_role_grants_its_own_topics_only() {
        let id = Uuid::new_v4();
        let role = create_device_role(id);
        let topics: Vec<&str> = role["acls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|acl| acl["topic"].as_str().unwrap())
            .collect();
        for topic in &topics {
            assert!(topic.starts_with(&format!("devices/{id}/")), "{topic}");
            assert!(!topic.contains(['+', '#']), "{topic}");
        }
        assert_eq!(topics.len(), 4);
    }

    #[test]
    fn answers_reach_whoever_waits_for_their_correlation_and_refusals_carry_the_reason() {
        let pending = PendingAnswers::default();
        let mut ok = pending.expect("a".into());
        let mut refused = pending.expect("b".into());
        pending.deliver(&Bytes::from_static(
            br#"{"responses":[{"command":"createRole","correlationData":"a"},
                {"command":"createClient","error":"Client already exists","correlationData":"b"},
                {"command":"getRole","correlationData":"nobody waits"}]}"#,
        ));
        assert!(ok.try_recv().unwrap().is_ok());
        assert_eq!(
            refused.try_recv().unwrap().unwrap_err(),
            "Client already exists"
        );
    }
}
