//! Each uid's share of the socket: who may open one more connection or one
//! more event stream.
//!
//! The daemon serves every local user on one socket, so one user opening
//! connections as fast as they are closed must not lock the others out,
//! least of all root, whose own holds would then lapse. Three rules, checked
//! at accept (connections) and at `GET /v1/events` (streams):
//!
//! - every connection counts against `max_connections`;
//! - the last `reserved` of them are kept for the privileged uids: root and
//!   the daemon's own uid;
//! - any other uid (or a peer whose uid is unknown) holds at most
//!   `per_uid` connections, of which at most `streams_per_uid` carry event
//!   streams.
//!
//! Pure bookkeeping: no socket, no clock. Depends on nothing of ours but
//! [`crate::ids`] (its map).

use std::fmt;

use crate::ids::IdMap;

/// The limits; `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Connections only privileged uids may take.
    pub reserved: usize,
    /// Connections one unprivileged uid may hold.
    pub per_uid: usize,
    /// Event streams one unprivileged uid may hold.
    pub streams_per_uid: usize,
}

impl ShareLimits {
    /// Each connection costs a descriptor and a few KiB; far more than the
    /// agents of one machine need, and well under the usual 1024-descriptor
    /// soft limit.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
    /// Enough for root's heartbeats, a status check and a few watchers
    /// while every other uid is at its share.
    pub const DEFAULT_RESERVED: usize = 32;
    /// A busy user's agents, each with a heartbeat connection and a
    /// watcher, with room to spare; seven users at their share still leave
    /// the reserve free.
    pub const DEFAULT_PER_UID: usize = 64;
    /// Event streams stay open for hours; a user needs a few watchers and
    /// `wait-idle`s, not hundreds.
    pub const DEFAULT_STREAMS_PER_UID: usize = 16;
}

impl Default for ShareLimits {
    fn default() -> Self {
        ShareLimits {
            max_connections: ShareLimits::DEFAULT_MAX_CONNECTIONS,
            reserved: ShareLimits::DEFAULT_RESERVED,
            per_uid: ShareLimits::DEFAULT_PER_UID,
            streams_per_uid: ShareLimits::DEFAULT_STREAMS_PER_UID,
        }
    }
}

/// Why a connection or stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refused {
    /// Every connection is taken.
    Capacity { limit: usize },
    /// Only the reserve is left, and the peer is not privileged.
    Reserve { limit: usize, reserved: usize },
    /// The uid holds its share of connections.
    UidConnections {
        uid: Option<u32>,
        open: usize,
        limit: usize,
    },
    /// The uid holds its share of event streams.
    UidStreams {
        uid: Option<u32>,
        open: usize,
        limit: usize,
    },
}

impl Refused {
    /// Every cause, in the order `/metrics` lists them.
    pub const CAUSES: [&'static str; 4] = ["capacity", "reserve", "uid_connections", "uid_streams"];

    /// The metric label and log key: one of [`CAUSES`](Self::CAUSES).
    pub fn cause(&self) -> &'static str {
        match self {
            Refused::Capacity { .. } => "capacity",
            Refused::Reserve { .. } => "reserve",
            Refused::UidConnections { .. } => "uid_connections",
            Refused::UidStreams { .. } => "uid_streams",
        }
    }
}

/// A uid for people: `uid 1000`, or `an unknown uid`.
fn uid_text(uid: Option<u32>) -> String {
    uid.map_or_else(|| "an unknown uid".to_string(), |uid| format!("uid {uid}"))
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refused::Capacity { limit } => write!(
                f,
                "too many open connections: the daemon is at its limit of {limit} (--max-connections); retry shortly"
            ),
            Refused::Reserve { limit, reserved } => write!(
                f,
                "the daemon has {} of its {limit} connections in use; the last {reserved} are kept for root (--reserved-connections); retry shortly",
                limit - reserved
            ),
            Refused::UidConnections { uid, open, limit } => write!(
                f,
                "{} has {open} connections open, its limit of {limit} (--max-connections-per-uid); close some, or reuse one with keep-alive",
                uid_text(uid)
            ),
            Refused::UidStreams { uid, open, limit } => write!(
                f,
                "{} has {open} event streams open, its limit of {limit} (--max-streams-per-uid); close a watcher first",
                uid_text(uid)
            ),
        }
    }
}

/// How many connections and streams each uid holds.
///
/// Invariant: `open` is the sum of `by_uid`'s connection counts; a uid's
/// streams never exceed its connections; uids with nothing open have no
/// entry.
#[derive(Debug)]
pub struct Shares {
    limits: ShareLimits,
    /// Root and the daemon's own uid.
    privileged: [u32; 2],
    open: usize,
    by_uid: IdMap<Option<u32>, Held>,
}

/// One uid's connections and, among them, its event streams.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    connections: usize,
    streams: usize,
}

impl Shares {
    /// No connection open; `daemon_uid` is privileged beside root.
    pub fn new(limits: ShareLimits, daemon_uid: u32) -> Shares {
        Shares {
            limits,
            privileged: [0, daemon_uid],
            open: 0,
            by_uid: IdMap::default(),
        }
    }

    /// Whether `uid` may take the reserve and is free of per-uid shares.
    fn is_privileged(&self, uid: Option<u32>) -> bool {
        uid.is_some_and(|uid| self.privileged.contains(&uid))
    }

    /// Counts a new connection from `uid`, or says why it is refused.
    ///
    /// # Errors
    /// [`Refused::Capacity`], [`Refused::Reserve`] or
    /// [`Refused::UidConnections`]; nothing is counted then.
    pub fn connect(&mut self, uid: Option<u32>) -> Result<(), Refused> {
        let limits = self.limits;
        if self.open >= limits.max_connections {
            return Err(Refused::Capacity {
                limit: limits.max_connections,
            });
        }
        if !self.is_privileged(uid) {
            let reserved = limits.reserved.min(limits.max_connections);
            if self.open >= limits.max_connections - reserved {
                return Err(Refused::Reserve {
                    limit: limits.max_connections,
                    reserved,
                });
            }
            let open = self.held(uid).connections;
            if open >= limits.per_uid {
                return Err(Refused::UidConnections {
                    uid,
                    open,
                    limit: limits.per_uid,
                });
            }
        }
        self.open += 1;
        self.by_uid.entry(uid).or_default().connections += 1;
        Ok(())
    }

    /// Turns one of `uid`'s connections into an event stream, or says why
    /// it is refused.
    ///
    /// # Errors
    /// [`Refused::UidStreams`]; nothing is counted then.
    pub fn start_stream(&mut self, uid: Option<u32>) -> Result<(), Refused> {
        let privileged = self.is_privileged(uid);
        let limit = self.limits.streams_per_uid;
        let held = self.by_uid.entry(uid).or_default();
        debug_assert!(held.streams < held.connections, "a stream is a connection");
        if !privileged && held.streams >= limit {
            return Err(Refused::UidStreams {
                uid,
                open: held.streams,
                limit,
            });
        }
        held.streams += 1;
        Ok(())
    }

    /// Forgets one of `uid`'s connections, which carried a stream if
    /// `was_stream`.
    pub fn disconnect(&mut self, uid: Option<u32>, was_stream: bool) {
        let Some(held) = self.by_uid.get_mut(&uid) else {
            return;
        };
        held.connections = held.connections.saturating_sub(1);
        if was_stream {
            held.streams = held.streams.saturating_sub(1);
        }
        if held.connections == 0 {
            self.by_uid.remove(&uid);
        }
        self.open = self.open.saturating_sub(1);
    }

    fn held(&self, uid: Option<u32>) -> Held {
        self.by_uid.get(&uid).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAEMON: u32 = 999;

    fn streams(shares: &Shares) -> usize {
        shares.by_uid.values().map(|held| held.streams).sum()
    }

    fn shares(max: usize, reserved: usize, per_uid: usize, streams: usize) -> Shares {
        Shares::new(
            ShareLimits {
                max_connections: max,
                reserved,
                per_uid,
                streams_per_uid: streams,
            },
            DAEMON,
        )
    }

    #[test]
    fn a_uid_past_its_share_is_refused_while_others_connect() {
        let mut shares = shares(100, 10, 3, 1);
        for _ in 0..3 {
            shares.connect(Some(65534)).unwrap();
        }
        assert_eq!(
            shares.connect(Some(65534)),
            Err(Refused::UidConnections {
                uid: Some(65534),
                open: 3,
                limit: 3
            })
        );
        shares.connect(Some(1000)).unwrap();
        shares.connect(Some(0)).unwrap();
        assert_eq!(shares.open, 5);
        // A closed connection frees a place in the share.
        shares.disconnect(Some(65534), false);
        shares.connect(Some(65534)).unwrap();
    }

    #[test]
    fn the_reserve_is_for_root_and_the_daemons_uid() {
        let mut shares = shares(6, 2, 10, 10);
        for uid in 1..=4 {
            shares.connect(Some(uid)).unwrap();
        }
        let refused = shares.connect(Some(5)).unwrap_err();
        assert_eq!(
            refused,
            Refused::Reserve {
                limit: 6,
                reserved: 2
            }
        );
        assert!(refused.to_string().contains("kept for root"), "{refused}");
        assert_eq!(shares.connect(None).unwrap_err().cause(), "reserve");
        shares.connect(Some(0)).unwrap();
        shares.connect(Some(DAEMON)).unwrap();
        assert_eq!(
            shares.connect(Some(0)),
            Err(Refused::Capacity { limit: 6 }),
            "even root is bounded by the total"
        );
    }

    #[test]
    fn privileged_uids_have_no_per_uid_share() {
        let mut shares = shares(50, 5, 2, 1);
        for _ in 0..10 {
            shares.connect(Some(0)).unwrap();
            shares.start_stream(Some(0)).unwrap();
        }
        assert!(shares.is_privileged(Some(DAEMON)));
        assert!(!shares.is_privileged(None));
        assert_eq!(streams(&shares), 10);
    }

    #[test]
    fn unknown_peers_share_one_bucket() {
        let mut shares = shares(50, 5, 2, 1);
        shares.connect(None).unwrap();
        shares.connect(None).unwrap();
        assert_eq!(
            shares.connect(None).unwrap_err().to_string(),
            "an unknown uid has 2 connections open, its limit of 2 (--max-connections-per-uid); close some, or reuse one with keep-alive"
        );
    }

    #[test]
    fn streams_are_counted_within_connections() {
        let mut shares = shares(50, 5, 4, 2);
        for _ in 0..3 {
            shares.connect(Some(7)).unwrap();
        }
        shares.start_stream(Some(7)).unwrap();
        shares.start_stream(Some(7)).unwrap();
        assert_eq!(
            shares.start_stream(Some(7)),
            Err(Refused::UidStreams {
                uid: Some(7),
                open: 2,
                limit: 2
            })
        );
        assert_eq!(streams(&shares), 2);
        shares.disconnect(Some(7), true);
        assert_eq!(streams(&shares), 1);
        shares.start_stream(Some(7)).unwrap();
        shares.disconnect(Some(7), true);
        shares.disconnect(Some(7), true);
        shares.disconnect(Some(7), false);
        assert_eq!((shares.open, streams(&shares)), (0, 0));
        assert!(
            shares.by_uid.is_empty(),
            "no entry for a uid with nothing open"
        );
    }
}
