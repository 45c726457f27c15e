//! Prometheus metrics in the text exposition format, kept by hand: a handful of counters,
//! one gauge and one histogram do not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    logins: Mutex<BTreeMap<&'static str, u64>>,
    tokens: Mutex<BTreeMap<&'static str, u64>>,
    mfa: Mutex<BTreeMap<&'static str, u64>>,
    mail: Mutex<BTreeMap<&'static str, u64>>,
    pub refresh_reuse: AtomicU64,
    pub throttled: AtomicU64,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
}

impl Metrics {
    /// One answered request. `route` is the operationId (bounded cardinality), never a
    /// raw path.
    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        bump(&self.requests, (route, status));
        let secs = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = latency.entry(route).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// `ok`, `failed` or `throttled`.
    pub fn login(&self, result: &'static str) {
        bump(&self.logins, result);
        if result == "throttled" {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A second factor checked after a right password: `ok` or `failed`.
    pub fn mfa(&self, result: &'static str) {
        bump(&self.mfa, result);
    }

    /// A message `queued`, `sent`, `retried` (a transient failure) or `failed` (given up).
    pub fn mail(&self, result: &'static str) {
        bump(&self.mail, result);
    }

    /// `password`, `refresh_token`, `client_credentials` or `cookie`.
    pub fn token_issued(&self, grant: &'static str) {
        bump(&self.tokens, grant);
    }

    /// `cache_live`: on PostgreSQL, whether this replica's cache is in use (its listener
    /// hears notifications); `None` on the file store.
    pub fn render(&self, argon2_queue: usize, cache_live: Option<bool>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP simple_api_http_requests_total Requests answered, by operation and status.\n",
        );
        out.push_str("# TYPE simple_api_http_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "simple_api_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP simple_api_http_request_duration_seconds Time to answer, by operation.\n",
        );
        out.push_str("# TYPE simple_api_http_request_duration_seconds histogram\n");
        for (route, h) in self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "simple_api_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "simple_api_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(
                out,
                "simple_api_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "simple_api_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP simple_api_logins_total Password logins, by result (ok, failed, throttled).\n",
        );
        out.push_str("# TYPE simple_api_logins_total counter\n");
        for (result, n) in self.logins.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "simple_api_logins_total{{result=\"{result}\"}} {n}");
        }
        out.push_str(
            "# HELP simple_api_second_factors_total Second factors checked after a right password, by result.\n",
        );
        out.push_str("# TYPE simple_api_second_factors_total counter\n");
        for (result, n) in self.mfa.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "simple_api_second_factors_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP simple_api_mail_total Messages, by what happened (queued, sent, retried, failed).\n",
        );
        out.push_str("# TYPE simple_api_mail_total counter\n");
        for (result, n) in self.mail.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "simple_api_mail_total{{result=\"{result}\"}} {n}");
        }
        out.push_str("# HELP simple_api_tokens_issued_total Access tokens issued, by grant.\n");
        out.push_str("# TYPE simple_api_tokens_issued_total counter\n");
        for (grant, n) in self.tokens.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "simple_api_tokens_issued_total{{grant=\"{grant}\"}} {n}"
            );
        }
        let counters = [
            (
                "simple_api_refresh_reuse_detected_total",
                "Refresh tokens replayed after the grace window (sessions revoked).",
                &self.refresh_reuse,
            ),
            (
                "simple_api_throttled_total",
                "Login attempts refused by throttling.",
                &self.throttled,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP simple_api_argon2_queue_depth Password hashes running or waiting.\n# TYPE simple_api_argon2_queue_depth gauge\nsimple_api_argon2_queue_depth {argon2_queue}"
        );
        if let Some(live) = cache_live {
            let _ = writeln!(
                out,
                "# HELP simple_api_store_cache_live 1 while this replica's cache is in use; 0 while it reads through to PostgreSQL (its listener is down).\n# TYPE simple_api_store_cache_live gauge\nsimple_api_store_cache_live {}",
                u8::from(live)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text_with_cumulative_buckets() {
        let m = Metrics::default();
        m.request("getStatus", 200, Duration::from_micros(300));
        m.request("getStatus", 200, Duration::from_millis(30));
        m.login("failed");
        m.token_issued("password");
        let text = m.render(3, Some(true));
        assert!(
            text.contains("simple_api_http_requests_total{route=\"getStatus\",status=\"200\"} 2")
        );
        assert!(text.contains(
            "simple_api_http_request_duration_seconds_bucket{route=\"getStatus\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "simple_api_http_request_duration_seconds_bucket{route=\"getStatus\",le=\"0.05\"} 2"
        ));
        assert!(text.contains("simple_api_logins_total{result=\"failed\"} 1"));
        assert!(text.contains("simple_api_argon2_queue_depth 3"));
        assert!(text.contains("simple_api_store_cache_live 1"));
        assert!(!m.render(0, None).contains("cache_live"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
    }
}
