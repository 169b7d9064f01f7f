//! Devices: provisioning by an operator, claiming by a user with the label's claim code, and
//! the owner's view of their devices. Someone else's device is indistinguishable from one
//! that does not exist.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use super::broker_logins::BrokerLogins;
use super::clock::system_ms;
use super::secrets::digest;
use super::text::{DISPLAYED_NAME_PATTERN, TextRule};
use crate::entity::{claim_failures, devices, telemetry};
use crate::mqtt::dynsec::DynamicSecurity;

/// Failed claims a user may make per hour; the next one is refused without checking.
pub const MAX_FAILED_CLAIMS_PER_HOUR: u64 = 10;
const HOUR_MS: i64 = 3_600_000;
/// Most devices one provisioning call creates.
pub const MAX_PROVISION_COUNT: u32 = 1_000;
/// Crockford's base32: no I, L, O or U, so a code read off a label is hard to mistype.
const LABEL_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The token names an account that no longer exists.
    #[error("the account no longer exists")]
    AccountGone,
    /// Not there, or not the caller's.
    #[error("no such device")]
    NotFound,
    #[error("wrong serial or claim code")]
    ClaimFailed,
    #[error("the device is already claimed")]
    AlreadyClaimed,
    #[error("too many failed claims; retry in {retry_after_secs} s")]
    TooManyClaims { retry_after_secs: u64 },
    #[error("invalid device name: {0}")]
    InvalidName(&'static str),
    #[error("invalid model: {0}")]
    InvalidModel(&'static str),
    /// The broker that must know the device (Mosquitto's dynamic security) refused it or did
    /// not answer: nothing was changed.
    #[error("the MQTT broker did not take the device: {0}")]
    BrokerUnavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for DeviceError {
    fn from(err: DbErr) -> Self {
        DeviceError::Internal(anyhow::Error::new(err).context("database error on devices"))
    }
}

/// [`DeviceName`]'s rule, as the spec states it.
pub const DEVICE_NAME_RULE: TextRule = TextRule {
    min_chars: 1,
    max_chars: 64,
    pattern: Some(DISPLAYED_NAME_PATTERN),
    description: concat!(
        "1–64 characters, stored without the white space around them. ",
        crate::displayed_name_characters!()
    ),
};

/// [`ModelName`]'s rule, as the spec states it.
pub const MODEL_NAME_RULE: TextRule = TextRule {
    min_chars: 1,
    max_chars: 64,
    pattern: Some("^[A-Za-z0-9_.-]*$"),
    description: "1–64 of `A-Z a-z 0-9 _ . -`.",
};

/// A device name: 1–64 characters, not only white space, no control or invisible format
/// characters; stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

impl DeviceName {
    pub fn parse(raw: &str) -> Result<DeviceName, DeviceError> {
        let trimmed = raw.trim();
        let length = raw.chars().count();
        if !(DEVICE_NAME_RULE.min_chars..=DEVICE_NAME_RULE.max_chars).contains(&length)
            || trimmed.is_empty()
        {
            return Err(DeviceError::InvalidName(
                "must be 1 to 64 characters long, not only spaces",
            ));
        }
        if trimmed.chars().any(super::text::is_hidden_or_control) {
            return Err(DeviceError::InvalidName(
                "must not contain control or invisible formatting characters",
            ));
        }
        Ok(DeviceName(trimmed.to_owned()))
    }
}

/// A model name: 1–64 of letters, digits and `_ . -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName(String);

impl ModelName {
    pub fn parse(raw: &str) -> Result<ModelName, DeviceError> {
        let valid = (MODEL_NAME_RULE.min_chars..=MODEL_NAME_RULE.max_chars).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if valid {
            Ok(ModelName(raw.to_owned()))
        } else {
            Err(DeviceError::InvalidModel(
                "must be 1 to 64 of letters, digits, '_', '.' and '-'",
            ))
        }
    }
}

/// What provisioning hands out, once: the secrets are stored only as hashes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProvisionedDevice {
    pub device_id: Uuid,
    pub serial: String,
    pub claim_code: String,
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// What the label's QR code holds, for the mini program's scanner:
    /// `iotbind:claim?serial=<serial>&code=<claim_code>`.
    pub claim_uri: String,
}

/// The claim URI of a label. Serials and claim codes are drawn from an alphabet that needs
/// no escaping in a URI.
fn claim_uri(serial: &str, claim_code: &str) -> String {
    format!("iotbind:claim?serial={serial}&code={claim_code}")
}

fn random_label(len: usize) -> String {
    (0..len)
        .map(|_| char::from(LABEL_ALPHABET[usize::from(rand::random::<u8>() & 31)]))
        .collect()
}

/// Creates `count` devices in one transaction and returns their one-time credentials. With
/// `broker` (Mosquitto's dynamic security), the broker gets each device's client first; if it
/// refuses or stays silent nothing is stored, and if the database then fails the broker's
/// clients are removed again.
pub async fn provision(
    db: &sea_orm::DatabaseConnection,
    broker: Option<&DynamicSecurity>,
    count: u32,
    model: Option<ModelName>,
) -> Result<Vec<ProvisionedDevice>, DeviceError> {
    let now = system_ms();
    let provisioned: Vec<ProvisionedDevice> = (0..count.min(MAX_PROVISION_COUNT))
        .map(|_| {
            let device_id = Uuid::new_v4();
            // 60 random bits: unique in practice, and the unique index catches the rest.
            let serial = format!("SN{}", random_label(12));
            let claim_code = random_label(20);
            ProvisionedDevice {
                device_id,
                claim_uri: claim_uri(&serial, &claim_code),
                serial,
                claim_code,
                mqtt_username: device_id.to_string(),
                mqtt_password: super::secrets::random_token(),
            }
        })
        .collect();
    let rows = provisioned.iter().map(|device| devices::ActiveModel {
        id: Set(device.device_id),
        serial: Set(device.serial.clone()),
        model: Set(model.as_ref().map(|m| m.0.clone())),
        name: Set(None),
        claim_code_hash: Set(digest(&device.claim_code)),
        mqtt_password_hash: Set(digest(&device.mqtt_password)),
        owner_id: Set(None),
        claimed_at: Set(None),
        online: Set(false),
        status_at: Set(None),
        last_seen_at: Set(None),
        created_at: Set(now),
    });
    let rows: Vec<_> = rows.collect();
    if let Some(broker) = broker {
        let credentials: Vec<(Uuid, String)> = provisioned
            .iter()
            .map(|d| (d.device_id, d.mqtt_password.clone()))
            .collect();
        broker
            .create_devices(&credentials)
            .await
            .map_err(|err| DeviceError::BrokerUnavailable(err.to_string()))?;
    }
    let stored = async {
        let txn = db.begin().await?;
        for chunk in rows.chunks(200) {
            devices::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await
    }
    .await;
    if let Err(err) = stored {
        if let Some(broker) = broker {
            let ids: Vec<Uuid> = provisioned.iter().map(|d| d.device_id).collect();
            broker.delete_devices(&ids).await;
        }
        return Err(err.into());
    }
    Ok(provisioned)
}

/// A device's new MQTT password, shown once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotatedPassword {
    pub device_id: Uuid,
    pub mqtt_password: String,
}

/// Gives a device a new MQTT password; the old one stops working at once: in the broker
/// (`broker`, which also drops the device's session), then in the stored hash, then in
/// `logins`' cache. A broker that refuses leaves everything as it was.
pub async fn rotate_mqtt_password(
    db: &sea_orm::DatabaseConnection,
    broker: Option<&DynamicSecurity>,
    logins: &BrokerLogins,
    device_id: Uuid,
) -> Result<RotatedPassword, DeviceError> {
    if devices::Entity::find_by_id(device_id)
        .one(db)
        .await?
        .is_none()
    {
        return Err(DeviceError::NotFound);
    }
    let mqtt_password = super::secrets::random_token();
    if let Some(broker) = broker {
        broker
            .set_device_password(device_id, &mqtt_password)
            .await
            .map_err(|err| DeviceError::BrokerUnavailable(err.to_string()))?;
    }
    let updated = devices::Entity::update_many()
        .col_expr(
            devices::Column::MqttPasswordHash,
            Expr::value(digest(&mqtt_password)),
        )
        .filter(devices::Column::Id.eq(device_id))
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        return Err(DeviceError::NotFound);
    }
    logins.forget(device_id).await;
    Ok(RotatedPassword {
        device_id,
        mqtt_password,
    })
}

/// The stored MQTT password hash of a device, for the broker's login check.
pub async fn mqtt_password_hash(
    db: &impl ConnectionTrait,
    device_id: Uuid,
) -> Result<Option<String>, DbErr> {
    devices::Entity::find_by_id(device_id)
        .select_only()
        .column(devices::Column::MqttPasswordHash)
        .into_tuple::<String>()
        .one(db)
        .await
}

/// A device with its newest telemetry that the owner may see.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub id: Uuid,
    pub serial: String,
    pub name: Option<String>,
    pub model: Option<String>,
    pub online: bool,
    /// Unix ms.
    pub last_seen_at: Option<i64>,
    /// Unix ms.
    pub claimed_at: Option<i64>,
    /// `(ts, values_json)` of the newest reading the owner may see.
    pub latest: Option<(i64, String)>,
}

/// How many label characters follow `SN` in a serial.
const SERIAL_LABEL_CHARS: usize = 12;
/// How many label characters a claim code has.
const CLAIM_CODE_CHARS: usize = 20;

/// A serial as typed, as the spec states it: as printed, in any case. White space around it
/// is forgiven too, which the pattern leaves out.
pub const SERIAL_RULE: TextRule = TextRule {
    min_chars: 2 + SERIAL_LABEL_CHARS,
    max_chars: 2 + SERIAL_LABEL_CHARS,
    pattern: Some("^[Ss][Nn][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]*$"),
    description: "As printed on the label: `SN` and 12 of `0-9 A-Z` without I, L, O and U; \
         any case.",
};

/// A claim code as typed, as the spec states it: as printed, in any case, with the spaces
/// and dashes people put in (at most 64 characters in all).
pub const CLAIM_CODE_RULE: TextRule = TextRule {
    min_chars: CLAIM_CODE_CHARS,
    max_chars: 64,
    pattern: Some("^[ -]*(?:[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z][ -]*){20}$"),
    description: "As printed on the label: 20 of `0-9 A-Z` without I, L, O and U; any case, \
         with spaces or dashes anywhere.",
};

/// Whether every byte of `label` is of the label alphabet.
fn is_label_text(label: &str) -> bool {
    label.bytes().all(|b| LABEL_ALPHABET.contains(&b))
}

/// A serial as typed, upper-cased and trimmed; `None` when it cannot be on any label, so it
/// is answered as a wrong serial without asking the database (which, in PostgreSQL's case,
/// refuses a NUL in a query outright).
fn label_serial(raw: &str) -> Option<String> {
    let serial = raw.trim().to_ascii_uppercase();
    let label = serial.strip_prefix("SN")?;
    (label.len() == SERIAL_LABEL_CHARS && is_label_text(label)).then_some(serial)
}

/// A claim code as typed: case and the separators people add are forgiven; `None` when it
/// cannot be on any label.
fn normalize_claim_code(code: &str) -> Option<String> {
    let normalized: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (normalized.len() == CLAIM_CODE_CHARS && is_label_text(&normalized)).then_some(normalized)
}

/// Claims a device for `user_id` with the serial and claim code from its label.
pub async fn claim(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    serial: &str,
    claim_code: &str,
    name: Option<DeviceName>,
) -> Result<DeviceView, DeviceError> {
    // A claim writes rows that point at the account: for an account that is gone they would
    // break the foreign key, so that is found out first and answered as the bad token it is.
    if !super::users::account_exists(db, user_id).await? {
        return Err(DeviceError::AccountGone);
    }
    let now = system_ms();
    let window_start = now - HOUR_MS;
    // One read gives both the count and, for Retry-After, when the oldest failure leaves the
    // window.
    let (recent_failures, oldest): (i64, Option<i64>) = claim_failures::Entity::find()
        .filter(claim_failures::Column::UserId.eq(user_id))
        .filter(claim_failures::Column::FailedAt.gt(window_start))
        .select_only()
        .column_as(claim_failures::Column::Id.count(), "failures")
        .column_as(claim_failures::Column::FailedAt.min(), "oldest")
        .into_tuple()
        .one(db)
        .await?
        .unwrap_or((0, None));
    if u64::try_from(recent_failures).unwrap_or(0) >= MAX_FAILED_CLAIMS_PER_HOUR {
        let oldest = oldest.unwrap_or(now);
        let retry_after_ms = (oldest + HOUR_MS - now).max(1_000);
        return Err(DeviceError::TooManyClaims {
            retry_after_secs: u64::try_from(retry_after_ms)
                .unwrap_or(1_000)
                .div_ceil(1_000),
        });
    }

    // A serial or code that is on no label is answered as a wrong one, and counted as a
    // failed claim, without asking the database.
    let device = match (label_serial(serial), normalize_claim_code(claim_code)) {
        (Some(serial), Some(code)) => devices::Entity::find()
            .filter(devices::Column::Serial.eq(serial))
            .one(db)
            .await?
            .filter(|device| device.claim_code_hash == digest(code)),
        _ => None,
    };
    let Some(device) = device else {
        claim_failures::Entity::insert(claim_failures::ActiveModel {
            user_id: Set(user_id),
            failed_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(db)
        .await?;
        return Err(DeviceError::ClaimFailed);
    };

    // The conditional update decides a race between two claimants: one row, one winner.
    let name = name.map(|n| n.0).unwrap_or_else(|| device.serial.clone());
    let claimed = devices::Entity::update_many()
        .col_expr(devices::Column::OwnerId, Expr::value(user_id))
        .col_expr(devices::Column::ClaimedAt, Expr::value(now))
        .col_expr(devices::Column::Name, Expr::value(name))
        .filter(devices::Column::Id.eq(device.id))
        .filter(devices::Column::OwnerId.is_null())
        .exec(db)
        .await?;
    if claimed.rows_affected == 0 {
        return Err(DeviceError::AlreadyClaimed);
    }
    get(db, user_id, device.id).await
}

/// The caller's device, or `NotFound` for a missing or foreign one.
pub async fn owned(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    device_id: Uuid,
) -> Result<devices::Model, DeviceError> {
    devices::Entity::find_by_id(device_id)
        .filter(devices::Column::OwnerId.eq(user_id))
        .one(db)
        .await?
        .ok_or(DeviceError::NotFound)
}

/// The caller's devices, oldest claim first.
pub async fn list(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> Result<Vec<DeviceView>, DeviceError> {
    let owned = devices::Entity::find()
        .filter(devices::Column::OwnerId.eq(user_id))
        .order_by_asc(devices::Column::ClaimedAt)
        .order_by_asc(devices::Column::Id)
        .all(db)
        .await?;
    // No devices may also mean no account: only then is it worth a second read.
    if owned.is_empty() && !super::users::account_exists(db, user_id).await? {
        return Err(DeviceError::AccountGone);
    }
    let mut views = Vec::with_capacity(owned.len());
    for device in owned {
        views.push(view(db, device).await?);
    }
    Ok(views)
}

/// One of the caller's devices.
pub async fn get(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    device_id: Uuid,
) -> Result<DeviceView, DeviceError> {
    let device = owned(db, user_id, device_id).await?;
    view(db, device).await
}

async fn view(
    db: &impl ConnectionTrait,
    device: devices::Model,
) -> Result<DeviceView, DeviceError> {
    // Ownership is decided by when the server received a row, never by the device's own
    // `ts`: a device that sends timestamps from the future must not carry one owner's readings
    // into the next owner's view.
    let since = device.claimed_at.unwrap_or(i64::MAX);
    let latest = telemetry::Entity::find()
        .filter(telemetry::Column::DeviceId.eq(device.id))
        .filter(telemetry::Column::ReceivedAt.gte(since))
        .order_by_desc(telemetry::Column::Ts)
        .order_by_desc(telemetry::Column::Id)
        .select_only()
        .column(telemetry::Column::Ts)
        .column(telemetry::Column::ValuesJson)
        .into_tuple::<(i64, String)>()
        .one(db)
        .await?;
    Ok(DeviceView {
        id: device.id,
        serial: device.serial,
        name: device.name,
        model: device.model,
        online: device.online,
        last_seen_at: device.last_seen_at,
        claimed_at: device.claimed_at,
        latest,
    })
}

/// Renames one of the caller's devices.
pub async fn rename(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    device_id: Uuid,
    name: DeviceName,
) -> Result<DeviceView, DeviceError> {
    let renamed = devices::Entity::update_many()
        .col_expr(devices::Column::Name, Expr::value(name.0))
        .filter(devices::Column::Id.eq(device_id))
        .filter(devices::Column::OwnerId.eq(user_id))
        .exec(db)
        .await?;
    if renamed.rows_affected == 0 {
        return Err(DeviceError::NotFound);
    }
    get(db, user_id, device_id).await
}

/// Gives up one of the caller's devices; anyone with the claim code may claim it again.
pub async fn unclaim(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    device_id: Uuid,
) -> Result<(), DeviceError> {
    let released = devices::Entity::update_many()
        .col_expr(devices::Column::OwnerId, Expr::value(Option::<Uuid>::None))
        .col_expr(devices::Column::ClaimedAt, Expr::value(Option::<i64>::None))
        .col_expr(devices::Column::Name, Expr::value(Option::<String>::None))
        .filter(devices::Column::Id.eq(device_id))
        .filter(devices::Column::OwnerId.eq(user_id))
        .exec(db)
        .await?;
    if released.rows_affected == 0 {
        return Err(DeviceError::NotFound);
    }
    Ok(())
}

/// Deletes failed-claim marks older than the rate-limit window.
pub async fn purge_old_claim_failures(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let deleted = claim_failures::Entity::delete_many()
        .filter(claim_failures::Column::FailedAt.lt(system_ms() - HOUR_MS))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_trimmed_and_bounded() {
        assert_eq!(DeviceName::parse("  Kitchen  ").unwrap().0, "Kitchen");
        assert!(DeviceName::parse("   ").is_err());
        assert!(DeviceName::parse(&"x".repeat(65)).is_err());
        assert!(DeviceName::parse("bad\u{0}name").is_err());
        assert!(DeviceName::parse(&"温".repeat(64)).is_ok());
    }

    #[test]
    fn model_names_are_simple_identifiers() {
        assert!(ModelName::parse("thermo-2.1").is_ok());
        assert!(ModelName::parse("").is_err());
        assert!(ModelName::parse("a/b").is_err());
    }

    #[test]
    fn claim_codes_forgive_case_and_separators() {
        assert_eq!(
            normalize_claim_code("abcd-efgh jkmn pqrs-tvwx").as_deref(),
            Some("ABCDEFGHJKMNPQRSTVWX")
        );
    }

    #[test]
    fn the_label_rules_the_spec_states_agree_with_what_a_claim_takes() {
        use crate::service::text::rule_admits;
        for sample in [
            "SN7KQ2M9XH4PZT",
            "sn7kq2m9xh4pzt",
            "SN7KQ2M9XH4PZ",
            "SN7KQ2M9XH4PZTX",
            "SN7KQ2M9XH4PZI",
            "XX7KQ2M9XH4PZT",
            "SN7KQ2M9XH4P\u{0}T",
            "no-such-serial",
        ] {
            assert_eq!(
                rule_admits(&SERIAL_RULE, sample),
                label_serial(sample).is_some(),
                "{sample:?}"
            );
        }
        // White space around a serial is forgiven, though the pattern leaves it out.
        assert!(label_serial(" SN7KQ2M9XH4PZT ").is_some());
        for sample in [
            "4HX9K2M7QPZT3VNB8WRC",
            "4hx9-k2m7-qpzt-3vnb-8wrc",
            "4HX9 K2M7 QPZT 3VNB 8WRC",
            "4HX9K2M7QPZT3VNB8WR",
            "4HX9K2M7QPZT3VNB8WRCC",
            "4HX9K2M7QPZT3VNB8WRO",
            "4HX9K2M7QPZT3VNB8WR\u{0}",
            "not-the-code",
        ] {
            assert_eq!(
                rule_admits(&CLAIM_CODE_RULE, sample),
                normalize_claim_code(sample).is_some(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn labels_use_only_the_unambiguous_alphabet() {
        let label = random_label(1_000);
        assert!(label.bytes().all(|b| LABEL_ALPHABET.contains(&b)));
        assert!(!label.contains(['I', 'L', 'O', 'U']));
    }

    #[test]
    fn the_name_rules_the_spec_states_agree_with_the_name_parsers_in_the_first_plane() {
        use crate::service::text::rule_admits;
        for sample in [
            "Living room",
            " Bedroom ",
            "名",
            "",
            "  ",
            &"n".repeat(64),
            &"n".repeat(65),
            &format!("{} ", "n".repeat(64)),
            "a\u{0}b",
            "a\nb",
            "a\u{202E}b",
            "a\u{00AD}b",
        ] {
            assert_eq!(
                rule_admits(&DEVICE_NAME_RULE, sample),
                DeviceName::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
        for sample in [
            "thermo-2",
            "a.b_c",
            "",
            &"m".repeat(64),
            &"m".repeat(65),
            "thermo 2",
            "thermé",
        ] {
            assert_eq!(
                rule_admits(&MODEL_NAME_RULE, sample),
                ModelName::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }
}
