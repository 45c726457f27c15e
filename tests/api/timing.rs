//! Timing that must not tell anything (run once, on the file store: the hasher is the
//! same whatever the store, and a twin on another store would share the cores in step).

use super::helpers::{spawn_app_on, Backend};

/// After `passwords calibrate` raises the cost, an account whose hash predates it must not
/// answer a wrong password more slowly (or quickly) than an unknown email does.
#[test]
fn after_a_change_of_parameters_dormant_accounts_and_unknown_emails_cost_the_same() {
    let app = spawn_app_on(Backend::File, |c| {
        c.argon2_m_kib = 16_384;
        c.argon2_t = 3;
        c.login_max_failures = 1_000_000;
    });
    let dormant = app.new_user();
    let app = app.restart_with(|c| c.argon2_t = 4);
    let time = |email: &str| {
        let started = std::time::Instant::now();
        app.password_grant(email, "wrong-password").expect(400);
        started.elapsed()
    };
    for _ in 0..3 {
        time(&dormant.email);
        time("nobody@example.com");
    }
    let (mut stale, mut unknown): (Vec<_>, Vec<_>) = (0..21)
        .map(|_| (time(&dormant.email), time("nobody@example.com")))
        .unzip();
    stale.sort();
    unknown.sort();
    let ratio = stale[10].as_secs_f64() / unknown[10].as_secs_f64();
    // Before: the old hash and then a current one, about 1.75 times an unknown email.
    assert!(
        (0.75..1.3).contains(&ratio),
        "dormant {:?} vs unknown {:?} (medians): {ratio:.2}",
        stale[10],
        unknown[10]
    );
}
