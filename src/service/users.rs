//! Accounts: the username and password rules, and creating an account.

use std::fmt;

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set, SqlErr};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::passwords::PasswordHasher;
use super::text::{DISPLAYED_NAME_PATTERN, TextRule};
use crate::entity::users::{self, Role};

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    #[error("weak password: {0}")]
    WeakPassword(&'static str),
    #[error("invalid nickname: {0}")]
    InvalidNickname(&'static str),
    #[error("invalid avatar_url: {0}")]
    InvalidAvatarUrl(&'static str),
    #[error("the username is taken")]
    UsernameTaken,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for UserError {
    fn from(err: DbErr) -> Self {
        UserError::Internal(anyhow::Error::new(err).context("database error on users"))
    }
}

/// [`Username`]'s rule, as the spec states it.
pub const USERNAME_RULE: TextRule = TextRule {
    min_chars: 3,
    max_chars: 32,
    pattern: Some("^[A-Za-z0-9_.-]*$"),
    description: "3–32 of `a-z A-Z 0-9 _ . -`; case-insensitive, stored lower-case.",
};

/// [`Password`]'s rule, as the spec states it: the pattern asks for one character that is not
/// a digit; that the password is not the username no pattern can say.
pub const PASSWORD_RULE: TextRule = TextRule {
    min_chars: 8,
    max_chars: 128,
    pattern: Some("[^0-9]"),
    description: "8–128 characters, not only digits, and not the username in any case (which \
         the pattern cannot say).",
};

/// [`Nickname`]'s rule, as the spec states it.
pub const NICKNAME_RULE: TextRule = TextRule {
    min_chars: 1,
    max_chars: 32,
    pattern: Some(DISPLAYED_NAME_PATTERN),
    description: concat!("1–32 characters. ", crate::displayed_name_characters!()),
};

/// A username that follows the rules: 3–32 of `a-z 0-9 _ . -`, stored lower-case.
///
/// Only ASCII letters are folded, so look-alikes such as the Kelvin sign (`K`, which Unicode
/// lower-cases to `k`) are refused rather than silently merged into another account's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, UserError> {
        let lowered = raw.to_ascii_lowercase();
        let length = lowered.chars().count();
        if !(USERNAME_RULE.min_chars..=USERNAME_RULE.max_chars).contains(&length) {
            return Err(UserError::InvalidUsername(
                "must be 3 to 32 characters long",
            ));
        }
        if !lowered
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        {
            return Err(UserError::InvalidUsername(
                "may contain only letters a-z, digits, '_', '.' and '-'",
            ));
        }
        Ok(Username(lowered))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password that follows the rules: 8–128 characters (Unicode characters, not bytes), not
/// only digits, and not the username in any case.
pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: SecretString, username: &Username) -> Result<Password, UserError> {
        let text = raw.expose_secret();
        let length = text.chars().count();
        if !(PASSWORD_RULE.min_chars..=PASSWORD_RULE.max_chars).contains(&length) {
            return Err(UserError::WeakPassword("must be 8 to 128 characters long"));
        }
        if text.chars().all(|c| c.is_ascii_digit()) {
            return Err(UserError::WeakPassword("must not be only digits"));
        }
        if text.to_lowercase() == username.as_str() {
            return Err(UserError::WeakPassword("must not be the username"));
        }
        Ok(Password(raw))
    }

    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

/// A display name: 1–32 characters, no control or invisible format characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nickname(String);

impl Nickname {
    pub fn parse(raw: &str) -> Result<Nickname, UserError> {
        let length = raw.chars().count();
        if !(NICKNAME_RULE.min_chars..=NICKNAME_RULE.max_chars).contains(&length)
            || raw.trim().is_empty()
        {
            return Err(UserError::InvalidNickname("must be 1 to 32 characters"));
        }
        if raw.chars().any(super::text::is_hidden_or_control) {
            return Err(UserError::InvalidNickname(
                "must not contain control or invisible formatting characters",
            ));
        }
        Ok(Nickname(raw.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An avatar address: an `https://` URL of at most 512 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarUrl(String);

impl AvatarUrl {
    pub fn parse(raw: &str) -> Result<AvatarUrl, UserError> {
        if raw.chars().count() > 512 {
            return Err(UserError::InvalidAvatarUrl(
                "must be at most 512 characters",
            ));
        }
        let host = raw.strip_prefix("https://").unwrap_or_default();
        let host = host.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UserError::InvalidAvatarUrl("must be an https:// URL"));
        }
        Ok(AvatarUrl(raw.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountRole {
    User,
    /// May also provision devices.
    Admin,
}

impl From<Role> for AccountRole {
    fn from(role: Role) -> Self {
        match role {
            Role::User => AccountRole::User,
            Role::Admin => AccountRole::Admin,
        }
    }
}

/// An account as its owner sees it: nothing of its password or its lockout counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub nickname: String,
    pub avatar_url: Option<String>,
    pub role: AccountRole,
    /// Whether a WeChat identity of our mini program is linked to it.
    pub wechat_bound: bool,
    pub created_at: chrono::DateTime<Utc>,
}

impl UserView {
    /// The view of a stored account.
    pub fn of(user: users::Model, wechat_bound: bool) -> UserView {
        UserView {
            id: user.id,
            username: user.username,
            nickname: user.nickname,
            avatar_url: user.avatar_url,
            role: user.role.into(),
            wechat_bound,
            created_at: user.created_at,
        }
    }
}

/// What it takes to make an account; the password is hashed before, outside any transaction.
pub struct NewUser {
    pub username: Username,
    pub password_hash: String,
    pub nickname: Option<String>,
    pub role: Role,
}

/// Hashes a new password (on the blocking pool).
pub async fn hash_password(hasher: &PasswordHasher, password: Password) -> anyhow::Result<String> {
    hasher.hash(password.into_secret()).await
}

/// Whether the account `user_id` still exists: a signed token outlives a deleted account.
pub async fn account_exists(db: &impl ConnectionTrait, user_id: Uuid) -> Result<bool, DbErr> {
    use sea_orm::{EntityTrait, PaginatorTrait};
    Ok(users::Entity::find_by_id(user_id).count(db).await? > 0)
}

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The token names an account that no longer exists.
    #[error("the account no longer exists")]
    AccountGone,
    #[error("only admins may do this")]
    NotAdmin,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for AdminError {
    fn from(err: DbErr) -> Self {
        AdminError::Internal(anyhow::Error::new(err).context("database error on the role check"))
    }
}

/// Admin routes ask the database, not the token: a token's `role` claim lives up to the
/// access token's lifetime, and a demoted admin must lose the rights at once.
pub async fn require_admin(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(), AdminError> {
    use sea_orm::{EntityTrait, QuerySelect};
    let role: Option<Role> = users::Entity::find_by_id(user_id)
        .select_only()
        .column(users::Column::Role)
        .into_tuple()
        .one(db)
        .await?;
    match role {
        None => Err(AdminError::AccountGone),
        Some(Role::Admin) => Ok(()),
        Some(Role::User) => Err(AdminError::NotAdmin),
    }
}

/// Whether an account already has `username`. A hint only, so that registering a taken name
/// costs no password hash: between this and the insert, the unique index decides.
pub async fn username_taken(
    db: &impl ConnectionTrait,
    username: &Username,
) -> Result<bool, UserError> {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    Ok(users::Entity::find()
        .filter(users::Column::Username.eq(username.as_str()))
        .count(db)
        .await?
        > 0)
}

/// Creates an account; the database's unique index decides a race for one username.
pub async fn create_user(
    db: &impl ConnectionTrait,
    new_user: NewUser,
) -> Result<users::Model, UserError> {
    let password_hash = new_user.password_hash;
    let now = Utc::now();
    let nickname = new_user
        .nickname
        .unwrap_or_else(|| new_user.username.as_str().to_owned());
    let user = users::ActiveModel {
        id: Set(Uuid::new_v4()),
        username: Set(new_user.username.as_str().to_owned()),
        password_hash: Set(password_hash),
        nickname: Set(nickname),
        avatar_url: Set(None),
        role: Set(new_user.role),
        created_at: Set(now),
        updated_at: Set(now),
        failed_logins: Set(0),
        failed_window_start: Set(None),
        locked_until: Set(None),
    };
    match user.insert(db).await {
        Ok(model) => Ok(model),
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(UserError::UsernameTaken)
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn usernames_are_stored_lower_case() {
        assert_eq!(Username::parse("Alice_01").unwrap().as_str(), "alice_01");
    }

    #[test]
    fn usernames_outside_3_to_32_characters_are_refused() {
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn usernames_with_spaces_unicode_or_nul_are_refused() {
        for bad in ["al ice", "alicé", "al\0ice", "\u{212A}elvin", "bob@x"] {
            assert!(Username::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn passwords_are_counted_in_characters_not_bytes() {
        let user = Username::parse("alice").unwrap();
        // Seven CJK characters are 21 bytes but still too short.
        assert!(Password::parse(secret("密码密码密码密"), &user).is_err());
        assert!(Password::parse(secret("密码密码密码密码"), &user).is_ok());
        assert!(Password::parse(secret(&"密".repeat(128)), &user).is_ok());
        assert!(Password::parse(secret(&"密".repeat(129)), &user).is_err());
    }

    #[test]
    fn all_digit_passwords_are_weak() {
        let user = Username::parse("alice").unwrap();
        assert!(Password::parse(secret("12345678"), &user).is_err());
        assert!(Password::parse(secret("1234567a"), &user).is_ok());
    }

    #[test]
    fn nicknames_are_1_to_32_characters_without_control_characters() {
        assert!(Nickname::parse("小明").is_ok());
        assert!(Nickname::parse(&"名".repeat(32)).is_ok());
        assert!(Nickname::parse(&"名".repeat(33)).is_err());
        assert!(Nickname::parse("").is_err());
        assert!(Nickname::parse("   ").is_err());
        assert!(Nickname::parse("a\u{0}b").is_err());
        assert!(Nickname::parse("evil\u{202E}gnp.exe").is_err());
        assert!(Nickname::parse("a\u{200B}b").is_err());
    }

    #[test]
    fn avatar_urls_must_be_https_and_at_most_512_characters() {
        assert!(AvatarUrl::parse("https://thirdwx.qlogo.cn/a/132").is_ok());
        assert!(AvatarUrl::parse("http://example.com/a.png").is_err());
        assert!(AvatarUrl::parse("https://").is_err());
        assert!(AvatarUrl::parse("https://x.com/a b").is_err());
        let long = format!("https://x.com/{}", "a".repeat(500));
        assert!(AvatarUrl::parse(&long).is_err());
    }

    #[test]
    fn the_username_in_any_case_is_a_weak_password() {
        let user = Username::parse("alice.smith").unwrap();
        assert!(Password::parse(secret("ALICE.Smith"), &user).is_err());
    }

    #[test]
    fn the_username_rule_the_spec_states_agrees_with_the_username_parser() {
        for sample in [
            "alice",
            "Al_ice.9-x",
            "ab",
            "abc",
            &"a".repeat(32),
            &"a".repeat(33),
            "al ice",
            "alicé",
            "\u{212A}elvin",
            "名字名",
            "bob@x",
            "al\0ice",
        ] {
            assert_eq!(
                crate::service::text::rule_admits(&USERNAME_RULE, sample),
                Username::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn the_password_rule_the_spec_states_agrees_with_the_password_parser_but_for_the_username() {
        let user = Username::parse("alice.smith").unwrap();
        for sample in [
            "correct horse",
            "12345678",
            "1234567a",
            "short1a",
            "密码密码密码密码",
            "密码密码密码密",
            &"x".repeat(128),
            &"x".repeat(129),
            "\0\0\0\0\0\0\0\0",
        ] {
            assert_eq!(
                crate::service::text::rule_admits(&PASSWORD_RULE, sample),
                Password::parse(secret(sample), &user).is_ok(),
                "{sample:?}"
            );
        }
        assert!(crate::service::text::rule_admits(
            &PASSWORD_RULE,
            "ALICE.Smith"
        ));
        assert!(Password::parse(secret("ALICE.Smith"), &user).is_err());
    }

    #[test]
    fn the_nickname_rule_the_spec_states_agrees_with_the_nickname_parser_in_the_first_plane() {
        for sample in [
            "Alice",
            "小明",
            " a ",
            "😀",
            "",
            "   ",
            "\u{3000}",
            &"名".repeat(32),
            &"名".repeat(33),
            "a\u{0}b",
            "a\tb",
            "evil\u{202E}gnp.exe",
            "a\u{200B}b",
            "a\u{FEFF}",
        ] {
            assert_eq!(
                crate::service::text::rule_admits(&NICKNAME_RULE, sample),
                Nickname::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
        // A tag character: refused, and said so only in words.
        assert!(crate::service::text::rule_admits(
            &NICKNAME_RULE,
            "a\u{E0041}"
        ));
        assert!(Nickname::parse("a\u{E0041}").is_err());
    }
}
