//! Tells the integration tests whether PostgreSQL is available to them (issue #9): its
//! binaries (the tests start a throwaway cluster) or DATABASE_URL. Without either, the
//! PostgreSQL half of the suite is left out and a single test says so (`cfg(no_postgres)`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_postgres)");
    println!("cargo::rerun-if-env-changed=DATABASE_URL");
    println!("cargo::rerun-if-changed=/usr/lib/postgresql");
    println!("cargo::rerun-if-changed=build.rs");
    let binaries = std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| {
            versions
                .filter_map(Result::ok)
                .any(|v| v.path().join("bin/initdb").exists())
        })
        .unwrap_or(false);
    if !binaries && std::env::var_os("DATABASE_URL").is_none() {
        println!("cargo::rustc-cfg=no_postgres");
    }
}
