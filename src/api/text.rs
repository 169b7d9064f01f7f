//! [`Text`]: a request string that must arrive as a JSON string; and [`RuledText`], one whose
//! schema states the service rule it follows.
//!
//! poem-openapi's own `String` also accepts `42` or `true` and turns them into text; the
//! contract answers a wrong type with 400, so request bodies use these stricter types.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::Deref;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use serde_json::Value;

use crate::service::text::TextRule;
use crate::service::{code_exchange, commands, devices, secrets, users};

/// A JSON string, and only a JSON string; from a form (read with serde), the field's text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl Text {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Self {
        Text(value.to_owned())
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

/// Passwords go straight from the request into a secret wrapper.
impl From<Text> for secrecy::SecretString {
    fn from(text: Text) -> Self {
        secrecy::SecretString::from(text.0)
    }
}

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Ok(Text(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A service's text rule that a request field follows.
pub trait FieldRule: Send + Sync + 'static {
    const RULE: TextRule;
}

/// Declares a [`FieldRule`] marker per service rule.
macro_rules! field_rules {
    ($($(#[$doc:meta])* $name:ident = $rule:expr;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl FieldRule for $name {
                const RULE: TextRule = $rule;
            }
        )+
    };
}

field_rules! {
    /// A new account's username.
    UsernameRule = users::USERNAME_RULE;
    /// A new password.
    PasswordRule = users::PASSWORD_RULE;
    /// A nickname.
    NicknameRule = users::NICKNAME_RULE;
    /// A device's name.
    DeviceNameRule = devices::DEVICE_NAME_RULE;
    /// A device model's name.
    ModelNameRule = devices::MODEL_NAME_RULE;
    /// A command's name.
    CommandNameRule = commands::COMMAND_NAME_RULE;
    /// A `wx.login()` code.
    WechatCodeRule = code_exchange::WECHAT_CODE_RULE;
    /// A bind ticket.
    TicketRule = secrets::TOKEN_RULE;
    /// A device's serial, from its label.
    SerialRule = devices::SERIAL_RULE;
    /// A device's claim code, from its label.
    ClaimCodeRule = devices::CLAIM_CODE_RULE;
}

/// A JSON string whose schema states the rule `R` (lengths, pattern, and the rule in words as
/// the description unless the field has its own). Parsing checks only that it is a string:
/// the handler hands it to the service, whose rule decides and names what is wrong.
pub struct RuledText<R> {
    text: String,
    rule: PhantomData<fn() -> R>,
}

impl<R> RuledText<R> {
    pub fn into_inner(self) -> String {
        self.text
    }
}

impl<R> Deref for RuledText<R> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl<R> From<&str> for RuledText<R> {
    fn from(value: &str) -> Self {
        RuledText {
            text: value.to_owned(),
            rule: PhantomData,
        }
    }
}

/// New passwords go straight from the request into a secret wrapper.
impl<R> From<RuledText<R>> for secrecy::SecretString {
    fn from(text: RuledText<R>) -> Self {
        secrecy::SecretString::from(text.text)
    }
}

impl<R: FieldRule> Type for RuledText<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let rule = R::RULE;
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(rule.description),
            min_length: Some(rule.min_chars),
            max_length: Some(rule.max_chars),
            pattern: rule.pattern.map(str::to_owned),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.text)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl<R: FieldRule> ParseFromJSON for RuledText<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Text::parse_from_json(value)
            .map(|text| RuledText {
                text: text.0,
                rule: PhantomData,
            })
            .map_err(ParseError::propagate)
    }
}

impl<R: FieldRule> ToJSON for RuledText<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.text.clone()))
    }
}

/// A query parameter that should be an RFC 3339 time, kept as sent: the schema says
/// `format: date-time`, and the handler parses it, naming the parameter when it is not one.
pub struct TimeText(pub String);

impl Type for TimeText {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "date-time")))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromParameter for TimeText {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(TimeText(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_strings_parse() {
        assert_eq!(
            Text::parse_from_json(Some(Value::from("x"))).unwrap(),
            Text::from("x")
        );
        for bad in [
            Value::from(42),
            Value::from(true),
            Value::Null,
            serde_json::json!([]),
        ] {
            assert!(Text::parse_from_json(Some(bad)).is_err());
        }
        assert!(Text::parse_from_json(None).is_err());
    }

    fn patterns<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields {
                    match (key.as_str(), field) {
                        ("pattern", Value::String(pattern)) => found.push(pattern),
                        _ => patterns(field, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| patterns(item, found)),
            _ => {}
        }
    }

    #[test]
    fn every_pattern_the_spec_declares_compiles() {
        let spec: Value = serde_json::from_str(&crate::api::development_openapi_json()).unwrap();
        let mut found = Vec::new();
        patterns(&spec, &mut found);
        assert!(found.len() >= 6, "{found:?}");
        for pattern in found {
            assert!(regex::Regex::new(pattern).is_ok(), "{pattern:?}");
        }
    }

    #[test]
    fn a_ruled_field_states_its_service_rule() {
        let MetaSchemaRef::Inline(schema) = RuledText::<NicknameRule>::schema_ref() else {
            panic!("a ruled field's schema is inline");
        };
        let rule = users::NICKNAME_RULE;
        assert_eq!(schema.min_length, Some(rule.min_chars));
        assert_eq!(schema.max_length, Some(rule.max_chars));
        assert_eq!(schema.pattern.as_deref(), rule.pattern);
        assert_eq!(schema.description, Some(rule.description));
    }
}
