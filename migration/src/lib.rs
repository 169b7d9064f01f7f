//! Database migrations of iotbind, applied in order on every start and by `iotbind migrate`.
//!
//! One migration per change, never edited once applied: a deployed database only moves
//! forward, so a fix to an old migration is a new migration.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_create_users;
mod m20261121_000002_create_auth_tables;
mod m20261121_000003_create_device_tables;
mod m20261205_000004_create_login_failures;

/// The ordered list of every migration iotbind has ever had.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_users::Migration),
            Box::new(m20261121_000002_create_auth_tables::Migration),
            Box::new(m20261121_000003_create_device_tables::Migration),
            Box::new(m20261205_000004_create_login_failures::Migration),
        ]
    }
}
