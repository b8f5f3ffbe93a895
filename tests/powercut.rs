//! Power cuts through the real store (log, checkpoints into redb, recovery)
//! over a simulated disk that keeps only what was synced: see
//! `sprite_tasks::testing::powercut`. Each cut drops the unsynced writes or
//! keeps a random prefix of them, the last one torn at a 512-byte boundary;
//! a quarter of the rounds also cut during start-up and recovery.
//!
//! `SPRITE_POWERCUT_CUTS=N` runs N cuts per seed instead of the CI default;
//! `SPRITE_POWERCUT_SEED=S` replays one seed (each seed is printed).

use std::time::{SystemTime, UNIX_EPOCH};

use sprite_tasks::testing::powercut::{self, Seeded};

/// Cuts per seed in CI, over several seeds: a few hundred in all, a few
/// seconds.
const DEFAULT_CUTS: u64 = 100;
const DEFAULT_SEEDS: u64 = 4;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn no_acknowledged_change_is_lost_or_undone_at_any_power_cut() {
    let cuts = env_u64("SPRITE_POWERCUT_CUTS").unwrap_or(DEFAULT_CUTS);
    let seeds: Vec<u64> = match env_u64("SPRITE_POWERCUT_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            (0..DEFAULT_SEEDS)
                .map(|i| base.wrapping_add(i * 0x9e37_79b9))
                .collect()
        }
    };
    let mut total = powercut::Report::default();
    for seed in seeds {
        println!("power-cut seed {seed} ({cuts} cuts); replay with SPRITE_POWERCUT_SEED={seed}");
        let report = powercut::run(&mut Seeded::new(seed), cuts)
            .unwrap_or_else(|violation| panic!("seed {seed}: {violation}"));
        assert_eq!(report.cuts, cuts, "seed {seed}: every cut was made");
        assert!(report.acknowledged > 0, "seed {seed}: {report:?}");
        total.cuts += report.cuts;
        total.acknowledged += report.acknowledged;
        total.unanswered += report.unanswered;
        total.recovered_unanswered += report.recovered_unanswered;
        total.checkpoints += report.checkpoints;
    }
    println!("{total:?}");
    assert!(total.checkpoints > 0, "the runs checkpointed: {total:?}");
    assert!(total.unanswered > 0, "some cuts hit a commit: {total:?}");
}
