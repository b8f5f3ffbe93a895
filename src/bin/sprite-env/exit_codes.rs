//! The exit statuses of `sprite-env`, named; which command uses which is in
//! the crate's doc and in each command's help.

/// Exit status of a `tasks` command that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status for bad usage, as clap's.
pub const EXIT_USAGE: u8 = 2;
/// curl's own status for "could not connect", used when the socket is not
/// served before curl is even run.
pub const EXIT_CURL_NO_CONNECTION: u8 = 7;
/// The hold could not be taken (as `env`/`timeout` use 125 for their own
/// failures).
pub const EXIT_HOLD_FAILED: u8 = 125;
/// The command exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The command (or curl) was not found.
pub const EXIT_NOT_FOUND: u8 = 127;
/// `tasks status`: nothing holds the machine (as `systemctl is-active`
/// says "inactive").
pub const EXIT_IDLE: u8 = 3;
/// `tasks wait-idle`: the daemon cannot be reached (sysexits.h's
/// EX_UNAVAILABLE), apart from 1, which means the timeout passed.
pub const EXIT_UNAVAILABLE: u8 = 69;
