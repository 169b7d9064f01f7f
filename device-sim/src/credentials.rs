//! Device credentials: the JSON lines `iotbind device provision` prints, read and written,
//! and provisioning through the admin API (`POST /api/v1/admin/devices`).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The admin API provisions at most this many devices per request (`openapi/openapi.json`).
const MAX_PER_REQUEST: usize = 1_000;

/// What a device needs to connect, as provisioning hands it out: one JSON line each.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCredentials {
    pub device_id: String,
    /// On the label, with the claim code; the simulator itself never needs either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_code: Option<String>,
    pub mqtt_username: String,
    pub mqtt_password: String,
}

/// Secrets stay out of logs and panic messages.
impl fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("device_id", &self.device_id)
            .field("serial", &self.serial)
            .field("mqtt_username", &self.mqtt_username)
            .finish_non_exhaustive()
    }
}

/// Why a devices file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("line {line}: not a device as `iotbind device provision` prints it: {source}")]
    Line {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "line {line}: device {device_id} appears twice; two clients with one client id would \
         keep throwing each other off the broker"
    )]
    Duplicate { line: usize, device_id: String },
    #[error("no devices in the file")]
    Empty,
}

/// Reads JSON lines, one device each; blank lines are skipped.
pub fn parse_jsonl(text: &str) -> Result<Vec<DeviceCredentials>, CredentialsError> {
    let mut devices = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let device: DeviceCredentials =
            serde_json::from_str(line).map_err(|source| CredentialsError::Line {
                line: index + 1,
                source,
            })?;
        if !seen.insert(device.device_id.clone()) {
            return Err(CredentialsError::Duplicate {
                line: index + 1,
                device_id: device.device_id,
            });
        }
        devices.push(device);
    }
    if devices.is_empty() {
        return Err(CredentialsError::Empty);
    }
    Ok(devices)
}

/// Writes devices as JSON lines, as `iotbind device provision` prints them.
pub fn to_jsonl(devices: &[DeviceCredentials]) -> String {
    devices
        .iter()
        .filter_map(|device| serde_json::to_string(device).ok())
        .map(|line| line + "\n")
        .collect()
}

/// Why provisioning through the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot reach {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered 201 with an unexpected body: {source}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

#[derive(Deserialize)]
struct Provisioned {
    items: Vec<DeviceCredentials>,
}

/// Provisions `count` devices through `POST {api}/api/v1/admin/devices` with an admin's
/// access token, in requests of at most 1,000.
pub async fn provision(
    api: &str,
    admin_token: &str,
    count: usize,
    model: Option<&str>,
) -> Result<Vec<DeviceCredentials>, ProvisionError> {
    let url = format!("{}/api/v1/admin/devices", api.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut devices = Vec::with_capacity(count);
    while devices.len() < count {
        let batch = (count - devices.len()).min(MAX_PER_REQUEST);
        let mut body = serde_json::json!({ "count": batch });
        if let Some(model) = model {
            body["model"] = serde_json::Value::String(model.to_owned());
        }
        let response = client
            .post(&url)
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await
            .map_err(|source| ProvisionError::Request {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        if status != 201 {
            let body = response.text().await.unwrap_or_default();
            return Err(ProvisionError::Refused { url, status, body });
        }
        let provisioned: Provisioned =
            response
                .json()
                .await
                .map_err(|source| ProvisionError::Body {
                    url: url.clone(),
                    source,
                })?;
        devices.extend(provisioned.items);
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"device_id":"d1","serial":"SN1","claim_code":"CODE","mqtt_username":"d1","mqtt_password":"secret"}"#;

    #[test]
    fn the_lines_iotbind_device_provision_prints_are_read_back() {
        let text = format!("{LINE}\n\n{}\n", LINE.replace("d1", "d2"));
        let devices = parse_jsonl(&text).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[1].device_id, "d2");
        assert_eq!(devices[1].mqtt_password, "secret");
        assert_eq!(parse_jsonl(&to_jsonl(&devices)).unwrap(), devices);
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let text = format!("{LINE}\nnot json\n");
        let error = parse_jsonl(&text).unwrap_err();
        assert!(
            matches!(error, CredentialsError::Line { line: 2, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_device_listed_twice_is_refused() {
        let text = format!("{LINE}\n{LINE}\n");
        assert!(matches!(
            parse_jsonl(&text),
            Err(CredentialsError::Duplicate { line: 2, .. })
        ));
        assert!(matches!(parse_jsonl("\n"), Err(CredentialsError::Empty)));
    }

    #[test]
    fn debug_output_keeps_the_secrets_out() {
        let devices = parse_jsonl(LINE).unwrap();
        let shown = format!("{:?}", devices[0]);
        assert!(
            !shown.contains("secret") && !shown.contains("CODE"),
            "{shown}"
        );
    }
}
