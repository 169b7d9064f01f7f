//! `/api/v1/admin/…`: operator actions, for admins only.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::error::{ApiFailure, DATABASE_UNAVAILABLE};
use super::security::BearerAuth;
use super::text::{ModelNameRule, RuledText};
use crate::error_docs;
use crate::service::devices::{self, ModelName};
use crate::service::users;
use crate::state::AppState;

/// Operator actions.
#[derive(Default)]
pub struct AdminApi;

/// How many devices to create.
#[derive(Object)]
#[oai(example)]
struct ProvisionRequest {
    /// 1–1000.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    count: u32,
    #[oai(nullable)]
    model: Option<RuledText<ModelNameRule>>,
}

impl Example for ProvisionRequest {
    fn example() -> Self {
        ProvisionRequest {
            count: 1,
            model: Some(RuledText::from("thermo-2")),
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
    502: "`broker_unavailable`: the MQTT broker (Mosquitto's dynamic security) refused the \
          devices or did not answer within 5 s; none was created",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(RotateErrors {
    401: "`invalid_token`",
    403: "`forbidden`: admins only",
    404: "`device_not_found`",
    502: "`broker_unavailable`: the MQTT broker refused the new password or did not answer \
          within 5 s; the old password stays",
    503: DATABASE_UNAVAILABLE,
});

/// A device's new MQTT password, shown this once.
#[derive(Object, Debug, Clone)]
struct RotatedPassword {
    device_id: Uuid,
    /// For the device's firmware; the old password no longer works.
    mqtt_password: String,
}

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
        let created =
            devices::provision(&state.db, state.dynsec.as_ref(), body.count, model).await?;
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

    /// Give a device a new MQTT password
    ///
    /// The old password stops working at once (the broker drops the device's connection when
    /// it keeps devices in Mosquitto's dynamic security). Also how a device provisioned before
    /// dynamic security was turned on gets its broker client.
    #[oai(
        path = "/admin/devices/:device_id/mqtt-password",
        method = "post",
        operation_id = "admin_rotate_device_mqtt_password"
    )]
    async fn rotate_mqtt_password(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
    ) -> Result<Json<RotatedPassword>, ApiFailure<RotateErrors>> {
        users::require_admin(&state.db, auth.0.sub).await?;
        let device_id = super::devices::device_id(&device_id.0)?;
        let rotated = devices::rotate_mqtt_password(
            &state.db,
            state.dynsec.as_ref(),
            &state.broker_logins,
            device_id,
        )
        .await?;
        Ok(Json(RotatedPassword {
            device_id: rotated.device_id,
            mqtt_password: rotated.mqtt_password,
        }))
    }
}
