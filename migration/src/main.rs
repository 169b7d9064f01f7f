//! The migration crate's own CLI (`cargo run -p migration -- up|down|status|fresh`), reading
//! `DATABASE_URL`; the server applies the same migrations itself on start.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
