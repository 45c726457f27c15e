//! `simple-api passwords ...`: password hashing tools.

use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum PasswordsCommand {
    /// Measure argon2id on this machine and suggest ARGON2_* settings for a target time.
    Calibrate {
        /// The time one hash should take, in milliseconds.
        #[arg(long, default_value_t = 50)]
        target_ms: u64,
    },
}

/// `simple-api passwords calibrate`: keeps the OWASP memory cost (19 MiB) or more and finds
/// the passes that reach the target time on this machine; raises memory when even ten
/// passes are faster than the target. Also reports what one hash costs with the current
/// ARGON2_* settings (the benchmarks' single-hash baseline).
pub fn passwords(config: &Config, command: PasswordsCommand) -> anyhow::Result<()> {
    let PasswordsCommand::Calibrate { target_ms } = command;
    let target = Duration::from_millis(target_ms.max(1));
    let time_lanes = |m: u32, t: u32, p: u32| -> anyhow::Result<Duration> {
        let params = argon2::Params::new(m, t, p, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        let mut best = Duration::MAX;
        // The best of three: the machine's speed, not its neighbours' noise.
        for _ in 0..3 {
            let started = std::time::Instant::now();
            argon
                .hash_password_into(b"calibration password", b"calibration salt", &mut out)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            best = best.min(started.elapsed());
        }
        Ok(best)
    };
    let time = |m: u32, t: u32| time_lanes(m, t, 1);
    let current = time_lanes(config.argon2_m_kib, config.argon2_t, config.argon2_p)?;
    let mut m = 19_456;
    let mut t = 1;
    let mut took = time(m, t)?;
    while took < target && t < 10 {
        t += 1;
        took = time(m, t)?;
    }
    while took < target && m < 1_048_576 {
        m *= 2;
        took = time(m, t)?;
    }
    println!(
        "{}",
        json!({
            "ARGON2_M_KIB": m, "ARGON2_T": t, "ARGON2_P": 1,
            "measured_ms": took.as_secs_f64() * 1000.0, "target_ms": target_ms,
            "current_ms": current.as_secs_f64() * 1000.0,
            "note": "each concurrent hash holds ARGON2_M_KIB of memory; at most one per core runs at once"
        })
    );
    Ok(())
}
