//! Creates what logging in needs: WeChat identities, bind tickets, refresh token families and
//! tokens, the per-account lockout counters, and the server's own generated secrets.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Lockout counters live on the account row so one conditional UPDATE decides them.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::FailedLogins)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::FailedWindowStart)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Users::LockedUntil).big_integer().null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WechatIdentities::Table)
                    .col(
                        ColumnDef::new(WechatIdentities::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WechatIdentities::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(WechatIdentities::Appid)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WechatIdentities::Openid)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WechatIdentities::Unionid)
                            .string_len(128)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(WechatIdentities::SessionKey)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(WechatIdentities::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WechatIdentities::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WechatIdentities::Table, WechatIdentities::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One openid links to one account, and one account to one openid per app: the two
        // indexes decide every bind race.
        manager
            .create_index(
                Index::create()
                    .name("wechat_identities_appid_openid")
                    .table(WechatIdentities::Table)
                    .col(WechatIdentities::Appid)
                    .col(WechatIdentities::Openid)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("wechat_identities_user_appid")
                    .table(WechatIdentities::Table)
                    .col(WechatIdentities::UserId)
                    .col(WechatIdentities::Appid)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BindTickets::Table)
                    .col(
                        ColumnDef::new(BindTickets::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(BindTickets::TicketHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(BindTickets::Openid)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(BindTickets::Unionid).string_len(128).null())
                    .col(
                        ColumnDef::new(BindTickets::SessionKey)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BindTickets::FailedAttempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(BindTickets::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(BindTickets::SpentAt).big_integer().null())
                    .col(
                        ColumnDef::new(BindTickets::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("bind_tickets_expires_at")
                    .table(BindTickets::Table)
                    .col(BindTickets::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshFamilies::Table)
                    .col(
                        ColumnDef::new(RefreshFamilies::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RefreshFamilies::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(RefreshFamilies::RevokedAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(RefreshFamilies::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RefreshFamilies::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshFamilies::Table, RefreshFamilies::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_families_user_id")
                    .table(RefreshFamilies::Table)
                    .col(RefreshFamilies::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(
                        ColumnDef::new(RefreshTokens::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RefreshTokens::FamilyId).uuid().not_null())
                    .col(
                        ColumnDef::new(RefreshTokens::TokenHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(RefreshTokens::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RefreshTokens::SpentAt).big_integer().null())
                    .col(
                        ColumnDef::new(RefreshTokens::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshTokens::Table, RefreshTokens::FamilyId)
                            .to(RefreshFamilies::Table, RefreshFamilies::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_tokens_family_id")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::FamilyId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ServerSecrets::Table)
                    .col(
                        ColumnDef::new(ServerSecrets::Name)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ServerSecrets::Value).string().not_null())
                    .col(
                        ColumnDef::new(ServerSecrets::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ServerSecrets::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            RefreshFamilies::Table.into_iden(),
            BindTickets::Table.into_iden(),
            WechatIdentities::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        for column in [
            Users::FailedLogins,
            Users::FailedWindowStart,
            Users::LockedUntil,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    FailedLogins,
    FailedWindowStart,
    LockedUntil,
}

#[derive(DeriveIden)]
enum WechatIdentities {
    Table,
    Id,
    UserId,
    Appid,
    Openid,
    Unionid,
    SessionKey,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum BindTickets {
    Table,
    Id,
    TicketHash,
    Openid,
    Unionid,
    SessionKey,
    FailedAttempts,
    ExpiresAt,
    SpentAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RefreshFamilies {
    Table,
    Id,
    UserId,
    RevokedAt,
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    FamilyId,
    TokenHash,
    ExpiresAt,
    SpentAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ServerSecrets {
    Table,
    Name,
    Value,
    CreatedAt,
}
