//! What a measured phase comes to: nearest-rank percentiles of its
//! latencies and its rate, and how durations are shown and written.

use std::time::Duration;

use serde_json::{Value, json};

/// Latencies of one measured phase, and its rate.
#[derive(Debug, Clone)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub per_second: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `samples`; `wall` is the phase's length.
    pub fn of(mut samples: Vec<Duration>, wall: Duration) -> Summary {
        assert!(!samples.is_empty(), "a phase measured nothing");
        samples.sort_unstable();
        let rank = |p: f64| {
            let index = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1]
        };
        Summary {
            count: samples.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: samples[samples.len() - 1],
            per_second: samples.len() as f64 / wall.as_secs_f64(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_us": micros(self.p50),
            "p90_us": micros(self.p90),
            "p99_us": micros(self.p99),
            "max_us": micros(self.max),
            "per_second": self.per_second.round(),
        })
    }
}

pub fn micros(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e7).round() / 10.0
}

pub fn show(duration: Duration) -> String {
    let us = duration.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}
