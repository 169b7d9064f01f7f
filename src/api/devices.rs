//! `/api/v1/devices…`: claiming devices, the owner's view of them, their telemetry history
//! and the commands relayed to them.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use super::ApiTags;
use super::error::{ApiError, ApiFailure, DATABASE_UNAVAILABLE};
use super::security::BearerAuth;
use super::text::{
    ClaimCodeRule, CommandNameRule, DeviceNameRule, RuledText, SerialRule, TimeText,
};
use crate::error_docs;
use crate::service::commands::{
    self, CommandName, CommandStage, CommandView, DEFAULT_TIMEOUT_MS, NewCommand,
};
use crate::service::devices::{self, DeviceError, DeviceName, DeviceView};
use crate::service::telemetry::{self, Cursor, HistoryQuery};
use crate::state::AppState;

/// The signed-in user's devices.
#[derive(Default)]
pub struct DevicesApi;

/// A device as its owner sees it.
#[derive(Object, Debug, Clone)]
#[oai(example)]
pub struct Device {
    pub id: Uuid,
    /// Printed on the label, with the claim code.
    pub serial: String,
    #[oai(nullable)]
    pub name: Option<String>,
    #[oai(nullable)]
    pub model: Option<String>,
    /// From the device's retained status and its last will.
    pub online: bool,
    /// When any message from the device last arrived.
    #[oai(nullable)]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When the current owner claimed it; they see data from then on.
    #[oai(nullable)]
    pub claimed_at: Option<DateTime<Utc>>,
    /// The newest telemetry since the claim.
    #[oai(nullable)]
    pub latest: Option<TelemetryPoint>,
}

impl Example for Device {
    fn example() -> Self {
        Device {
            id: Uuid::nil(),
            serial: "SN7KQ2M9XH4PZT".to_owned(),
            name: Some("Living room".to_owned()),
            model: Some("thermo-2".to_owned()),
            online: true,
            last_seen_at: Some(DateTime::<Utc>::UNIX_EPOCH),
            claimed_at: Some(DateTime::<Utc>::UNIX_EPOCH),
            latest: Some(TelemetryPoint::example()),
        }
    }
}

/// One telemetry message.
#[derive(Object, Debug, Clone)]
#[oai(example)]
pub struct TelemetryPoint {
    /// RFC 3339 with milliseconds: the device's timestamp, or the arrival time.
    pub ts: String,
    /// Name → number, boolean or string.
    pub values: BTreeMap<String, Value>,
}

impl Example for TelemetryPoint {
    fn example() -> Self {
        TelemetryPoint {
            ts: "2026-11-21T08:30:00.250Z".to_owned(),
            values: BTreeMap::from([
                ("temperature".to_owned(), Value::from(21.5)),
                ("relay".to_owned(), Value::from(true)),
            ]),
        }
    }
}

fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn instant(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
}

fn point(ts: i64, values_json: &str) -> TelemetryPoint {
    TelemetryPoint {
        ts: rfc3339_ms(ts),
        values: serde_json::from_str(values_json).unwrap_or_default(),
    }
}

impl From<DeviceView> for Device {
    fn from(view: DeviceView) -> Self {
        Device {
            id: view.id,
            serial: view.serial,
            name: view.name,
            model: view.model,
            online: view.online,
            last_seen_at: instant(view.last_seen_at),
            claimed_at: instant(view.claimed_at),
            latest: view.latest.map(|(ts, values)| point(ts, &values)),
        }
    }
}

/// The caller's devices.
#[derive(Object, Debug, Clone)]
pub struct DeviceList {
    pub items: Vec<Device>,
}

/// A page of telemetry, newest first.
#[derive(Object, Debug, Clone)]
pub struct TelemetryPage {
    pub items: Vec<TelemetryPoint>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// Where a command stands.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum CommandState {
    Sent,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
}

impl From<CommandStage> for CommandState {
    fn from(status: CommandStage) -> Self {
        match status {
            CommandStage::Sent => CommandState::Sent,
            CommandStage::Succeeded => CommandState::Succeeded,
            CommandStage::Failed => CommandState::Failed,
            CommandStage::Rejected => CommandState::Rejected,
            CommandStage::TimedOut => CommandState::TimedOut,
        }
    }
}

/// A command relayed to a device, and its outcome.
#[derive(Object, Debug, Clone)]
#[oai(example)]
pub struct Command {
    pub id: Uuid,
    pub device_id: Uuid,
    pub name: String,
    pub params: BTreeMap<String, Value>,
    pub status: CommandState,
    /// What the device answered, if anything.
    #[oai(nullable)]
    pub result: Option<BTreeMap<String, Value>>,
    /// The device's error text for `failed` or `rejected`.
    #[oai(nullable)]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it became final.
    #[oai(nullable)]
    pub completed_at: Option<DateTime<Utc>>,
}

impl Example for Command {
    fn example() -> Self {
        Command {
            id: Uuid::nil(),
            device_id: Uuid::nil(),
            name: "set_relay".to_owned(),
            params: BTreeMap::from([("on".to_owned(), Value::from(true))]),
            status: CommandState::Succeeded,
            result: Some(BTreeMap::from([("on".to_owned(), Value::from(true))])),
            error: None,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            completed_at: Some(DateTime::<Utc>::UNIX_EPOCH),
        }
    }
}

impl From<CommandView> for Command {
    fn from(command: CommandView) -> Self {
        Command {
            id: command.id,
            device_id: command.device_id,
            name: command.name,
            params: serde_json::from_str(&command.params_json).unwrap_or_default(),
            status: command.stage.into(),
            result: command
                .result_json
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok()),
            error: command.error,
            created_at: instant(Some(command.created_at)).unwrap_or_default(),
            completed_at: instant(command.completed_at),
        }
    }
}

/// The caller's recent commands to one device.
#[derive(Object, Debug, Clone)]
pub struct CommandList {
    pub items: Vec<Command>,
}

/// What is printed on the device's label, and a name for the device (the serial when left
/// out).
#[derive(Object)]
#[oai(example)]
struct ClaimRequest {
    serial: RuledText<SerialRule>,
    claim_code: RuledText<ClaimCodeRule>,
    #[oai(nullable)]
    name: Option<RuledText<DeviceNameRule>>,
}

impl Example for ClaimRequest {
    fn example() -> Self {
        ClaimRequest {
            serial: RuledText::from("SN7KQ2M9XH4PZT"),
            claim_code: RuledText::from("4HX9K2M7QPZT3VNB8WRC"),
            name: Some(RuledText::from("Living room")),
        }
    }
}

/// A new name.
#[derive(Object)]
#[oai(example)]
struct RenameRequest {
    name: RuledText<DeviceNameRule>,
}

impl Example for RenameRequest {
    fn example() -> Self {
        RenameRequest {
            name: RuledText::from("Bedroom"),
        }
    }
}

/// A command for the device.
#[derive(Object)]
#[oai(example)]
struct CommandRequest {
    name: RuledText<CommandNameRule>,
    /// Passed to the device as is.
    #[oai(nullable)]
    params: Option<BTreeMap<String, Value>>,
    /// How long the device has to answer (100–60000 ms, default 5000); the command expires
    /// after it.
    #[oai(nullable, validator(minimum(value = "100"), maximum(value = "60000")))]
    timeout_ms: Option<u32>,
    /// Wait for the final state (200) instead of answering at once (202).
    #[oai(nullable)]
    wait: Option<bool>,
}

impl Example for CommandRequest {
    fn example() -> Self {
        CommandRequest {
            name: RuledText::from("set_relay"),
            params: Some(BTreeMap::from([("on".to_owned(), Value::from(true))])),
            timeout_ms: Some(5000),
            wait: Some(true),
        }
    }
}

#[derive(ApiResponse)]
enum Claimed {
    /// Claimed: the device is the caller's now.
    #[oai(status = 201)]
    Created(Json<Device>),
}

#[derive(ApiResponse)]
enum Unclaimed {
    /// Released; it can be claimed again.
    #[oai(status = 204)]
    NoContent,
}

#[derive(ApiResponse)]
enum CommandSent {
    /// `wait=true`: the command's final state.
    #[oai(status = 200)]
    Final(Json<Command>),
    /// `wait=false`: sent; poll it for the outcome.
    #[oai(status = 202)]
    Accepted(Json<Command>),
}

error_docs!(ClaimErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_token`",
    404: "`claim_failed`: wrong serial or claim code",
    409: "`already_claimed`: someone owns the device",
    413: "`payload_too_large`",
    422: "`invalid_device_name`",
    429: "`too_many_attempts`: 10 failed claims within an hour",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(ListErrors {
    401: "`invalid_token`",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(DeviceErrors {
    401: "`invalid_token`",
    404: "`device_not_found`: no such device, or not the caller's",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(RenameErrors {
    400: "`invalid_request`: malformed body",
    401: "`invalid_token`",
    404: "`device_not_found`",
    413: "`payload_too_large`",
    422: "`invalid_device_name`",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(TelemetryErrors {
    400: "`invalid_request`: `from` or `to` not an RFC 3339 time, `limit` out of 1–1000, or a \
          `cursor` this server did not give out (a cursor is opaque: no schema tells one apart)",
    401: "`invalid_token`",
    404: "`device_not_found`",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(SendCommandErrors {
    400: "`invalid_request`: malformed body or `timeout_ms` out of range",
    401: "`invalid_token`",
    404: "`device_not_found`",
    413: "`payload_too_large`",
    422: "`invalid_command_name`",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(CommandListErrors {
    400: "`invalid_request`: `limit` out of range",
    401: "`invalid_token`",
    404: "`device_not_found`",
    503: DATABASE_UNAVAILABLE,
});

error_docs!(CommandErrors {
    401: "`invalid_token`",
    404: "`device_not_found` or `command_not_found`",
    503: DATABASE_UNAVAILABLE,
});

/// A path id that is not a UUID names no device.
pub(super) fn device_id(raw: &str) -> Result<Uuid, DeviceError> {
    Uuid::parse_str(raw).map_err(|_| DeviceError::NotFound)
}

fn time_param(name: &str, raw: Option<TimeText>) -> Result<Option<i64>, ApiError> {
    raw.map(|TimeText(raw)| {
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.timestamp_millis())
            .map_err(|_| ApiError::invalid_request(format!("`{name}` must be an RFC 3339 time")))
    })
    .transpose()
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Devices")]
impl DevicesApi {
    /// Claim a device
    ///
    /// With the serial and claim code from the device's label. A wrong serial and a wrong code
    /// get the same answer; after 10 failed claims within an hour, claims are refused for the
    /// rest of it.
    #[oai(
        path = "/devices/claim",
        method = "post",
        operation_id = "devices_claim"
    )]
    async fn claim(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: Json<ClaimRequest>,
    ) -> Result<Claimed, ApiFailure<ClaimErrors>> {
        let Json(body) = body;
        let name = body.name.as_deref().map(DeviceName::parse).transpose()?;
        let device =
            devices::claim(&state.db, auth.0.sub, &body.serial, &body.claim_code, name).await?;
        Ok(Claimed::Created(Json(device.into())))
    }

    /// List the caller's devices
    #[oai(path = "/devices", method = "get", operation_id = "devices_list")]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<DeviceList>, ApiFailure<ListErrors>> {
        let items = devices::list(&state.db, auth.0.sub).await?;
        Ok(Json(DeviceList {
            items: items.into_iter().map(Device::from).collect(),
        }))
    }

    /// Get one of the caller's devices
    #[oai(
        path = "/devices/:device_id",
        method = "get",
        operation_id = "devices_get"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
    ) -> Result<Json<Device>, ApiFailure<DeviceErrors>> {
        let id = self::device_id(&device_id)?;
        Ok(Json(devices::get(&state.db, auth.0.sub, id).await?.into()))
    }

    /// Rename a device
    #[oai(
        path = "/devices/:device_id",
        method = "patch",
        operation_id = "devices_rename"
    )]
    async fn rename(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
        body: Json<RenameRequest>,
    ) -> Result<Json<Device>, ApiFailure<RenameErrors>> {
        let id = self::device_id(&device_id)?;
        let name = DeviceName::parse(&body.name)?;
        Ok(Json(
            devices::rename(&state.db, auth.0.sub, id, name)
                .await?
                .into(),
        ))
    }

    /// Unclaim a device
    ///
    /// The device stays provisioned and can be claimed again with its label; the next owner
    /// sees nothing from before their own claim.
    #[oai(
        path = "/devices/:device_id",
        method = "delete",
        operation_id = "devices_unclaim"
    )]
    async fn unclaim(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
    ) -> Result<Unclaimed, ApiFailure<DeviceErrors>> {
        let id = self::device_id(&device_id)?;
        devices::unclaim(&state.db, auth.0.sub, id).await?;
        Ok(Unclaimed::NoContent)
    }

    /// Page through a device's telemetry
    ///
    /// Newest first, from the caller's claim on. `from` is inclusive and `to` exclusive.
    #[oai(
        path = "/devices/:device_id/telemetry",
        method = "get",
        operation_id = "devices_telemetry"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn telemetry(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
        /// RFC 3339, inclusive.
        from: Query<Option<TimeText>>,
        /// RFC 3339, exclusive.
        to: Query<Option<TimeText>>,
        /// 1–1000, default 100.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page, as given; any other value is 400.
        cursor: Query<Option<String>>,
    ) -> Result<Json<TelemetryPage>, ApiFailure<TelemetryErrors>> {
        let id = self::device_id(&device_id)?;
        let query = HistoryQuery {
            from: time_param("from", from.0)?,
            to: time_param("to", to.0)?,
            limit: u64::from(limit.0.unwrap_or(100)),
            cursor: cursor
                .0
                .map(|raw| {
                    Cursor::parse(&raw)
                        .ok_or_else(|| ApiError::invalid_request("`cursor` is not one we gave out"))
                })
                .transpose()?,
        };
        let page = telemetry::history(&state.db, auth.0.sub, id, query).await?;
        Ok(Json(TelemetryPage {
            items: page
                .items
                .iter()
                .map(|(ts, values)| point(*ts, values))
                .collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }))
    }

    /// Send a command to a device
    ///
    /// Published to the device with QoS 1 and an `expires_at`. With `wait=true` the answer is
    /// the final state (`succeeded`, `failed`, `rejected`, or `timed_out` when the device did
    /// not answer within `timeout_ms`); otherwise 202 at once.
    #[oai(
        path = "/devices/:device_id/commands",
        method = "post",
        operation_id = "devices_send_command"
    )]
    async fn send_command(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
        body: Json<CommandRequest>,
    ) -> Result<CommandSent, ApiFailure<SendCommandErrors>> {
        let id = self::device_id(&device_id)?;
        let Json(body) = body;
        let wait = body.wait.unwrap_or(false);
        let command = NewCommand {
            name: CommandName::parse(&body.name)?,
            params: body.params.unwrap_or_default().into_iter().collect(),
            timeout_ms: body.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            wait,
        };
        let sent = state.commands.send(auth.0.sub, id, command).await?;
        Ok(if wait {
            CommandSent::Final(Json(sent.into()))
        } else {
            CommandSent::Accepted(Json(sent.into()))
        })
    }

    /// List a device's recent commands
    ///
    /// Newest first, from the caller's claim on.
    #[oai(
        path = "/devices/:device_id/commands",
        method = "get",
        operation_id = "devices_list_commands"
    )]
    async fn list_commands(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
        /// 1–100, default 20.
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
    ) -> Result<Json<CommandList>, ApiFailure<CommandListErrors>> {
        let id = self::device_id(&device_id)?;
        let items =
            commands::recent(&state.db, auth.0.sub, id, u64::from(limit.0.unwrap_or(20))).await?;
        Ok(Json(CommandList {
            items: items.into_iter().map(Command::from).collect(),
        }))
    }

    /// Get one command
    #[oai(
        path = "/devices/:device_id/commands/:command_id",
        method = "get",
        operation_id = "devices_get_command"
    )]
    async fn get_command(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        device_id: Path<String>,
        command_id: Path<String>,
    ) -> Result<Json<Command>, ApiFailure<CommandErrors>> {
        let id = self::device_id(&device_id)?;
        let command_id =
            Uuid::parse_str(&command_id).map_err(|_| commands::CommandError::NotFound)?;
        Ok(Json(
            commands::get(&state.db, auth.0.sub, id, command_id)
                .await?
                .into(),
        ))
    }
}
