// sqlx's `migrate!` embeds the migration files at compile time; rebuild when one is
// added or changed, or a new migration would silently not be part of the binary.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
