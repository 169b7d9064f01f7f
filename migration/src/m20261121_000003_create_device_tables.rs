//! Creates what devices need: the devices themselves, their telemetry history, the commands
//! relayed to them, and the failed claims that rate-limit guessing claim codes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Devices::Table)
                    .col(ColumnDef::new(Devices::Id).uuid().not_null().primary_key())
                    .col(
                        ColumnDef::new(Devices::Serial)
                            .string_len(32)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Devices::Model).string_len(64).null())
                    .col(ColumnDef::new(Devices::Name).string_len(256).null())
                    .col(
                        ColumnDef::new(Devices::ClaimCodeHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Devices::MqttPasswordHash)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Devices::OwnerId).uuid().null())
                    .col(ColumnDef::new(Devices::ClaimedAt).big_integer().null())
                    .col(
                        ColumnDef::new(Devices::Online)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(Devices::StatusAt).big_integer().null())
                    .col(ColumnDef::new(Devices::LastSeenAt).big_integer().null())
                    .col(ColumnDef::new(Devices::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Devices::Table, Devices::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("devices_owner")
                    .table(Devices::Table)
                    .col(Devices::OwnerId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Telemetry::Table)
                    .col(
                        ColumnDef::new(Telemetry::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Telemetry::DeviceId).uuid().not_null())
                    .col(ColumnDef::new(Telemetry::Ts).big_integer().not_null())
                    .col(ColumnDef::new(Telemetry::ValuesJson).text().not_null())
                    .col(
                        ColumnDef::new(Telemetry::ReceivedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Telemetry::Table, Telemetry::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // History pages newest first within one device and a time range.
        manager
            .create_index(
                Index::create()
                    .name("telemetry_device_ts")
                    .table(Telemetry::Table)
                    .col(Telemetry::DeviceId)
                    .col(Telemetry::Ts)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Commands::Table)
                    .col(ColumnDef::new(Commands::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Commands::DeviceId).uuid().not_null())
                    .col(ColumnDef::new(Commands::UserId).uuid().not_null())
                    .col(ColumnDef::new(Commands::Name).string_len(64).not_null())
                    .col(ColumnDef::new(Commands::ParamsJson).text().not_null())
                    .col(ColumnDef::new(Commands::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Commands::ResultJson).text().null())
                    .col(ColumnDef::new(Commands::Error).text().null())
                    .col(ColumnDef::new(Commands::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Commands::ExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(Commands::CompletedAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Commands::Table, Commands::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("commands_device_created")
                    .table(Commands::Table)
                    .col(Commands::DeviceId)
                    .col(Commands::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // The sweeper finds overdue `sent` commands without scanning finished ones.
        manager
            .create_index(
                Index::create()
                    .name("commands_status_expires")
                    .table(Commands::Table)
                    .col(Commands::Status)
                    .col(Commands::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ClaimFailures::Table)
                    .col(
                        ColumnDef::new(ClaimFailures::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ClaimFailures::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(ClaimFailures::FailedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ClaimFailures::Table, ClaimFailures::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("claim_failures_user_failed")
                    .table(ClaimFailures::Table)
                    .col(ClaimFailures::UserId)
                    .col(ClaimFailures::FailedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ClaimFailures::Table.into_iden(),
            Commands::Table.into_iden(),
            Telemetry::Table.into_iden(),
            Devices::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    Serial,
    Model,
    Name,
    ClaimCodeHash,
    MqttPasswordHash,
    OwnerId,
    ClaimedAt,
    Online,
    StatusAt,
    LastSeenAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Telemetry {
    Table,
    Id,
    DeviceId,
    Ts,
    ValuesJson,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Commands {
    Table,
    Id,
    DeviceId,
    UserId,
    Name,
    ParamsJson,
    Status,
    ResultJson,
    Error,
    CreatedAt,
    ExpiresAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum ClaimFailures {
    Table,
    Id,
    UserId,
    FailedAt,
}
