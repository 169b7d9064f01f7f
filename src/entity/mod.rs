//! sea-orm entities: one module per table, mirroring the migrations.

pub mod users;
