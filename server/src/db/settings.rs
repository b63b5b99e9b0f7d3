//! Settings that every instance sharing the database must agree on, kept in
//! the database itself (`server_settings`): generated secrets.

use super::{Database, Dialect};

/// The secret that signs buyer cookies when `COOKIE_SECRET` is not set.
pub const COOKIE_SECRET: &str = "cookie_secret";

/// The secret the demo payment provider signs webhooks with when
/// `PAYMENT_WEBHOOK_SECRET` is not set.
pub const PAYMENT_WEBHOOK_SECRET: &str = "payment_webhook_secret";

/// The secret kept under `name`: the first instance to ask generates it
/// (32 random bytes, hex), every later one reads the same.
///
/// # Errors
/// Database failures.
pub async fn shared_secret(db: &Database, name: &str) -> Result<String, sqlx::Error> {
    let candidate = super::random_hex_secret();
    let insert = match db.dialect() {
        Dialect::Sqlite => "INSERT OR IGNORE INTO server_settings (name, value) VALUES (?, ?)",
        Dialect::MySql => "INSERT IGNORE INTO server_settings (name, value) VALUES (?, ?)",
        Dialect::Postgres => {
            "INSERT INTO server_settings (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
        }
    };
    sqlx::query(&db.sql(insert))
        .bind(name)
        .bind(candidate)
        .execute(db.pool())
        .await?;
    sqlx::query_scalar(&db.sql("SELECT value FROM server_settings WHERE name = ?"))
        .bind(name)
        .fetch_one(db.pool())
        .await
}
