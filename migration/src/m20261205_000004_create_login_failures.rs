//! Creates `login_failures`: wrong passwords counted per account and client address, so that
//! someone else's failures lock an account only for the address they came from.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .col(ColumnDef::new(LoginFailures::UserId).uuid().not_null())
                    // An IPv4 address or an IPv6 /64 network, as text.
                    .col(
                        ColumnDef::new(LoginFailures::Client)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LoginFailures::Failures).integer().not_null())
                    .col(
                        ColumnDef::new(LoginFailures::WindowStart)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoginFailures::LockedUntil)
                            .big_integer()
                            .null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(LoginFailures::UserId)
                            .col(LoginFailures::Client),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(LoginFailures::Table, LoginFailures::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The periodic purge finds what is over by its window.
        manager
            .create_index(
                Index::create()
                    .name("login_failures_window_start")
                    .table(LoginFailures::Table)
                    .col(LoginFailures::WindowStart)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LoginFailures::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    UserId,
    Client,
    Failures,
    WindowStart,
    LockedUntil,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
