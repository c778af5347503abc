//! Tests that need a PostgreSQL server run when `MACPOOL_TEST_DATABASE_URL` is set at build
//! time; otherwise they are compiled as `#[ignore]`d with that reason, so `cargo test` lists
//! each of them as ignored, by name, instead of passing silently.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=MACPOOL_TEST_DATABASE_URL");
    if std::env::var_os("MACPOOL_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
