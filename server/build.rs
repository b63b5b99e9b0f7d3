//! Rebuild when a migration changes: `sqlx::migrate!` embeds the files, but
//! cargo cannot see into the folder on its own.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
