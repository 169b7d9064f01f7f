//! `openapi/asyncapi.yaml` is what firmware is written against, so it is held to the server's
//! own code here: its addresses are the topics the server uses and its ACL lets each side use,
//! every example payload is taken by the server's parsers, the payloads listed as refused
//! (`tests/asyncapi/refused-payloads.json`, which CI also runs against the document's schemas)
//! are refused, each limit it states is where the parsers draw the line, and a command as the
//! server encodes it has the documented shape.

use device_sim::firmware::Command;
use iotbind::mqtt::payload::{self, CommandMessage, PayloadError};
use iotbind::mqtt::topics::{self, DeviceTopic, TopicKind};
use iotbind::service::commands::CommandName;
use serde_json::{Map, Value, json};
use uuid::Uuid;

const DOCUMENT: &str = include_str!("../../openapi/asyncapi.yaml");
const REFUSED: &str = include_str!("../asyncapi/refused-payloads.json");

/// The document, `$ref`s left in place.
fn document() -> Value {
    serde_norway::from_str(DOCUMENT).expect("openapi/asyncapi.yaml is YAML")
}

/// `value`, or what its local `$ref` (`#/…`) points to, followed as often as it takes.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not a reference within the document"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} points to nothing"));
    }
    value
}

/// One operation of the document, seen from the server.
struct Operation<'a> {
    /// `send` or `receive`.
    action: &'a str,
    /// The channel's address, with its `{device_id}` parameter.
    address: &'a str,
    messages: Vec<&'a Value>,
}

impl Operation<'_> {
    /// The topic for `device`, and what the server makes of it.
    fn topic(&self, device: Uuid) -> (String, TopicKind) {
        let topic = self.address.replace("{device_id}", &device.to_string());
        let parsed = DeviceTopic::parse(&topic)
            .unwrap_or_else(|| panic!("{} is not a device topic of the server", self.address));
        assert_eq!(parsed.device_id, device, "{}", self.address);
        (topic, parsed.kind)
    }
}

/// Every operation of the document, its channel and messages resolved.
fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let operations = doc["operations"].as_object().expect("operations");
    assert!(!operations.is_empty());
    operations
        .values()
        .map(|operation| {
            let channel = resolve(doc, &operation["channel"]);
            Operation {
                action: operation["action"].as_str().expect("an action"),
                address: channel["address"].as_str().expect("an address"),
                messages: operation["messages"]
                    .as_array()
                    .expect("messages")
                    .iter()
                    .map(|message| resolve(doc, message))
                    .collect(),
            }
        })
        .collect()
}

/// The device of the document's own example.
fn sample_device(doc: &Value) -> Uuid {
    let example = doc["components"]["parameters"]["device_id"]["examples"][0]
        .as_str()
        .expect("an example device id");
    topics::canonical_device_id(example).expect("the example device id is canonical")
}

/// The server's own name for `device`'s topic of `kind`.
fn server_topic(kind: TopicKind, device: Uuid) -> String {
    match kind {
        TopicKind::Telemetry => topics::telemetry(device),
        TopicKind::Status => topics::status(device),
        TopicKind::Commands => topics::commands(device),
        TopicKind::CommandResult => topics::command_result(device),
    }
}

/// Runs the parser the server runs on what arrives on a topic of `kind`.
fn server_parses(kind: TopicKind, payload: &[u8]) -> Result<(), PayloadError> {
    match kind {
        TopicKind::Telemetry => payload::parse_telemetry(payload).map(drop),
        TopicKind::Status => payload::parse_status(payload).map(drop),
        TopicKind::CommandResult => payload::parse_command_result(payload).map(drop),
        TopicKind::Commands => panic!("the server sends commands; it parses none"),
    }
}

/// A payload of `message` as it goes over the wire: the text itself for `text/plain`, else
/// its JSON.
fn wire(doc: &Value, message: &Value, payload: &Value) -> Vec<u8> {
    let content_type = message
        .get("contentType")
        .or_else(|| doc.get("defaultContentType"))
        .and_then(Value::as_str);
    match content_type {
        Some("application/json") => serde_json::to_vec(payload).unwrap(),
        Some("text/plain") => payload
            .as_str()
            .expect("a text payload")
            .as_bytes()
            .to_vec(),
        other => panic!("no wire form for content type {other:?}"),
    }
}

/// The messages devices send, by name, with the kind of topic each arrives on.
fn received_messages(doc: &Value) -> Vec<(&str, TopicKind, &Value)> {
    let device = sample_device(doc);
    operations(doc)
        .into_iter()
        .filter(|operation| operation.action == "receive")
        .flat_map(|operation| {
            let (_, kind) = operation.topic(device);
            operation.messages.into_iter().map(move |message| {
                let name = message["name"].as_str().expect("a message name");
                (name, kind, message)
            })
        })
        .collect()
}

/// The message named `name` that devices send, and the kind of topic it arrives on.
fn received_message<'a>(doc: &'a Value, name: &str) -> (TopicKind, &'a Value) {
    received_messages(doc)
        .into_iter()
        .find(|(received, ..)| *received == name)
        .map(|(_, kind, message)| (kind, message))
        .unwrap_or_else(|| panic!("no message {name} comes from devices"))
}

/// The payload schema of `message`, resolved.
fn schema<'a>(doc: &'a Value, message: &'a Value) -> &'a Value {
    resolve(doc, &message["payload"])
}

/// Whether `value` is of the JSON Schema `type`: one name or a list of them.
fn has_type(value: &Value, schema_type: &Value) -> bool {
    match schema_type {
        Value::Array(types) => types.iter().any(|one| has_type(value, one)),
        Value::String(name) => match name.as_str() {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            other => panic!("unknown JSON Schema type {other}"),
        },
        other => panic!("a JSON Schema type is a name or a list, not {other}"),
    }
}

/// How `payload` strays from the object `schema` in its fields: one missing, one not
/// documented where the schema closes the object, or one of the wrong type.
fn field_errors(schema: &Value, payload: &Value) -> Vec<String> {
    let properties = schema["properties"].as_object().expect("properties");
    let Some(fields) = payload.as_object() else {
        return vec![format!("{payload} is not an object")];
    };
    let mut errors = Vec::new();
    for required in schema["required"].as_array().expect("required fields") {
        let required = required.as_str().expect("a field name");
        if !fields.contains_key(required) {
            errors.push(format!("`{required}` is missing"));
        }
    }
    for (name, value) in fields {
        match properties.get(name) {
            Some(property) if !has_type(value, &property["type"]) => {
                errors.push(format!("`{name}` is {value}, not {}", property["type"]));
            }
            Some(_) => {}
            None if schema["additionalProperties"] == json!(false) => {
                errors.push(format!("`{name}` is not documented"));
            }
            None => {}
        }
    }
    errors
}

#[test]
fn the_documents_topics_are_the_servers_and_its_acl_lets_each_side_use_them() {
    let doc = document();
    let device = sample_device(&doc);
    let other = Uuid::new_v4();
    let mut received = Vec::new();
    let mut kinds = Vec::new();
    for operation in operations(&doc) {
        let (topic, kind) = operation.topic(device);
        assert_eq!(topic, server_topic(kind, device));
        match operation.action {
            "receive" => {
                assert!(topics::device_may_publish(device, &topic), "{topic}");
                assert!(!topics::device_may_subscribe(device, &topic), "{topic}");
                received.push(topic.clone());
            }
            "send" => {
                assert!(topics::device_may_subscribe(device, &topic), "{topic}");
                assert!(!topics::device_may_publish(device, &topic), "{topic}");
            }
            action => panic!("unknown action {action}"),
        }
        assert!(!topics::device_may_publish(other, &topic), "{topic}");
        assert!(!topics::device_may_subscribe(other, &topic), "{topic}");
        kinds.push(kind.label());
    }
    kinds.sort_unstable();
    assert_eq!(kinds, ["commands", "result", "status", "telemetry"]);
    received.sort_unstable();
    let mut publishable = topics::device_publish_topics(device).to_vec();
    publishable.sort_unstable();
    assert_eq!(received, publishable);
}

#[test]
fn every_payload_example_in_the_asyncapi_document_is_accepted_by_the_server() {
    let doc = document();
    let messages = received_messages(&doc);
    assert_eq!(messages.len(), 3);
    for (name, kind, message) in messages {
        let examples = message["examples"].as_array().expect("examples");
        assert!(examples.len() >= 2, "message {name} has too few examples");
        for example in examples {
            let payload = wire(&doc, message, &example["payload"]);
            assert_eq!(
                server_parses(kind, &payload),
                Ok(()),
                "example {} of message {name}: {}",
                example["name"],
                String::from_utf8_lossy(&payload)
            );
        }
    }
}

#[test]
fn the_payloads_listed_as_refused_are_refused_by_the_server() {
    let doc = document();
    let refused: Value = serde_json::from_str(REFUSED).unwrap();
    let mut checked = 0;
    for (name, cases) in refused.as_object().unwrap() {
        if name.starts_with('_') {
            continue;
        }
        let (kind, message) = received_message(&doc, name);
        for case in cases.as_array().unwrap() {
            let payload = wire(&doc, message, &case["payload"]);
            assert!(
                server_parses(kind, &payload).is_err(),
                "message {name}, {}: {} was taken",
                case["why"],
                String::from_utf8_lossy(&payload)
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} refused payloads");
    for kind in [TopicKind::Telemetry, TopicKind::CommandResult] {
        assert_eq!(server_parses(kind, b"{"), Err(PayloadError::InvalidJson));
    }
    assert_eq!(
        server_parses(TopicKind::Status, b"\xff"),
        Err(PayloadError::InvalidJson)
    );
}

#[test]
fn every_limit_the_document_states_is_where_the_server_draws_the_line() {
    let doc = document();
    let telemetry = schema(&doc, received_message(&doc, "telemetry").1);
    let values = &telemetry["properties"]["values"];
    let values_of = |count: u64, name_chars: u64| {
        let values: Map<String, Value> = (0..count)
            .map(|i| {
                (
                    format!("{i:0>width$}", width = name_chars as usize),
                    json!(i),
                )
            })
            .collect();
        json!({ "values": values }).to_string()
    };

    let max_values = values["maxProperties"].as_u64().unwrap();
    assert_eq!(
        max_values,
        payload::MAX_TELEMETRY_VALUES as u64,
        "telemetry values.maxProperties"
    );
    assert!(payload::parse_telemetry(values_of(max_values, 2).as_bytes()).is_ok());
    assert_eq!(
        payload::parse_telemetry(values_of(max_values + 1, 2).as_bytes()),
        Err(PayloadError::TooManyValues)
    );

    let max_name = values["propertyNames"]["maxLength"].as_u64().unwrap();
    assert!(payload::parse_telemetry(values_of(1, max_name).as_bytes()).is_ok());
    assert!(payload::parse_telemetry(values_of(1, max_name + 1).as_bytes()).is_err());

    let max_ts = telemetry["properties"]["ts"]["maximum"].as_i64().unwrap();
    let at = |ts: i64| json!({ "ts": ts, "values": { "t": 1 } }).to_string();
    assert_eq!(
        payload::parse_telemetry(at(max_ts).as_bytes()).map(|t| t.ts),
        Ok(Some(max_ts))
    );
    assert!(payload::parse_telemetry(at(max_ts + 1).as_bytes()).is_err());

    // Byte limits are beyond JSON Schema: the descriptions state them.
    for (name, limit) in [
        ("telemetry", payload::MAX_TELEMETRY_BYTES),
        ("commandResult", payload::MAX_RESULT_BYTES),
    ] {
        let (kind, message) = received_message(&doc, name);
        let description = schema(&doc, message)["description"].as_str().unwrap();
        assert!(
            description.contains(&format!("({limit} bytes)")),
            "the {name} schema does not state its limit of {limit} bytes: {description}"
        );
        let mut padded = wire(&doc, message, &message["examples"][0]["payload"]);
        padded.resize(limit, b' ');
        assert_eq!(
            server_parses(kind, &padded),
            Ok(()),
            "{name} of {limit} bytes"
        );
        padded.push(b' ');
        assert_eq!(
            server_parses(kind, &padded),
            Err(PayloadError::TooLarge),
            "{name} of {} bytes",
            limit + 1
        );
    }
}

#[test]
fn a_command_as_the_server_encodes_it_has_the_documented_shape() {
    let doc = document();
    let device = sample_device(&doc);
    let sent: Vec<&Value> = operations(&doc)
        .into_iter()
        .filter(|operation| operation.action == "send")
        .inspect(|operation| assert_eq!(operation.topic(device).1, TopicKind::Commands))
        .flat_map(|operation| operation.messages)
        .collect();
    let [message] = sent[..] else {
        panic!("the server sends one message, not {}", sent.len());
    };
    let schema = schema(&doc, message);
    assert_eq!(schema["additionalProperties"], json!(false));

    let params = json!({ "on": true });
    let encoded = serde_json::to_value(CommandMessage {
        id: Uuid::now_v7(),
        name: "set_relay",
        params: &params,
        expires_at: 1_767_225_605_000,
    })
    .unwrap();
    assert_eq!(field_errors(schema, &encoded), Vec::<String>::new());
    let mut documented: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let mut encoded_fields: Vec<&String> = encoded.as_object().unwrap().keys().collect();
    documented.sort_unstable();
    encoded_fields.sort_unstable();
    assert_eq!(encoded_fields, documented, "the fields of a command");

    let examples = message["examples"].as_array().expect("examples");
    assert!(examples.len() >= 2);
    for example in examples {
        let payload = &example["payload"];
        assert_eq!(
            field_errors(schema, payload),
            Vec::<String>::new(),
            "example {}",
            example["name"]
        );
        let name = payload["name"].as_str().unwrap();
        assert!(CommandName::parse(name).is_ok(), "{name}");
        assert!(Uuid::parse_str(payload["id"].as_str().unwrap()).is_ok());
        let bytes = wire(&doc, message, payload);
        assert!(
            Command::parse(&bytes).is_ok(),
            "the simulated firmware cannot read example {}",
            example["name"]
        );
    }
}
