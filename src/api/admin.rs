//! `/api/v1/admin/…`: operator actions, for admins only.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::error::{ApiFailure, DATABASE_UNAVAILABLE};
use super::security::BearerAuth;
use super::text::Text;
use crate::error_docs;
use crate::service::devices::{self, ModelName};
use crate::service::users;
use crate::state::AppState;

/// Operator actions.
pub struct AdminApi;

/// How many devices to create.
#[derive(Object)]
#[oai(example)]
struct ProvisionRequest {
    /// 1–1000.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    count: u32,
    /// 1–64 of letters, digits, `_ . -`.
    model: Option<Text>,
}

impl Example for ProvisionRequest {
    fn example() -> Self {
        ProvisionRequest {
            count: 1,
            model: Some(Text::from("thermo-2")),
        }
    }
}

/// A new device's identity and secrets, shown this once: only their hashes are kept.
#[derive(Object, Debug, Clone)]
struct ProvisionedDevice {
    device_id: Uuid,
    /// For the label.
    serial: String,
    /// For the label (or its QR code): whoever has it can claim the device.
    claim_code: String,
    /// The device's MQTT username and client id (= `device_id`).
    mqtt_username: String,
    /// For the device's firmware.
    mqtt_password: String,
    /// For the label's QR code, which the mini program's claim page scans:
    /// `iotbind:claim?serial=<serial>&code=<claim_code>`.
    claim_uri: String,
}

/// The devices created.
#[derive(Object, Debug, Clone)]
struct ProvisionedDevices {
    items: Vec<ProvisionedDevice>,
}

#[derive(ApiResponse)]
enum Provisioned {
    /// Created; the secrets are not shown again.
    #[oai(status = 201)]
    Created(Json<ProvisionedDevices>),
}

error_docs!(ProvisionErrors {
    400: "`invalid_request`: malformed body or `count` out of 1–1000",
    401: "`invalid_token`",
    403: "`forbidden`: admins only",
    413: "`payload_too_large`",
    422: "`invalid_model`",
    503: DATABASE_UNAVAILABLE,
});

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Admin")]
impl AdminApi {
    /// Provision devices
    ///
    /// Creates devices and returns, once, what goes on each label (serial, claim code) and into
    /// each firmware (MQTT username and password).
    #[oai(
        path = "/admin/devices",
        method = "post",
        operation_id = "admin_provision_devices"
    )]
    async fn provision(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: Json<ProvisionRequest>,
    ) -> Result<Provisioned, ApiFailure<ProvisionErrors>> {
        users::require_admin(&state.db, auth.0.sub).await?;
        let Json(body) = body;
        let model = body.model.as_deref().map(ModelName::parse).transpose()?;
        let created = devices::provision(&state.db, body.count, model).await?;
        Ok(Provisioned::Created(Json(ProvisionedDevices {
            items: created
                .into_iter()
                .map(|d| ProvisionedDevice {
                    device_id: d.device_id,
                    serial: d.serial,
                    claim_code: d.claim_code,
                    mqtt_username: d.mqtt_username,
                    mqtt_password: d.mqtt_password,
                    claim_uri: d.claim_uri,
                })
                .collect(),
        })))
    }
}
