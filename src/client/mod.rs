//! The client library of `sprite-env`, one concern per file:
//!
//! - [`http`]: a small blocking HTTP/1.1 client over the daemon's Unix
//!   socket ([`Client`], [`EventStream`]); the response grammar it reads
//!   with is [`crate::http`]'s, shared with the daemon.
//! - [`events`]: the event stream after its head ([`EventStream`]), cut
//!   into bounded lines.
//! - [`curl`]: the argument rewriting behind `sprite-env curl`.
//! - [`hold`]: the rules of `sprite-env tasks hold` (refresh interval,
//!   retry delay).
//! - [`render`]: the text the commands print for people.
//! - [`report`]: the usage report, its document and its text.
//!
//! Everything but [`Client`] and [`EventStream`] is pure and takes `now` as an
//! argument. Depends on [`crate::http`] (the grammar), [`crate::api`] (the
//! wire types and paths), [`crate::expire`] and [`crate::time`]; nothing here
//! knows the reactor or the store.
//!
//! Every exchange is bounded: connecting, writing the request and reading the
//! response all happen within one deadline, and every buffer has a named
//! limit, so a daemon that hangs or misbehaves produces an error, not a
//! stuck client. The one exception is an event stream after its head: it is
//! silent while nothing changes and ends when the daemon closes it.

pub mod curl;
pub mod events;
pub mod hold;
pub mod http;
pub mod render;
pub mod report;

pub use curl::{BASE_URL, CurlArgsError, curl_args};
pub use events::{EventStream, LineSplitter, MAX_EVENT_LINE};
pub use hold::{
    MAX_DEFAULT_INTERVAL, MAX_RETRY_DELAY, MIN_INTERVAL, check_interval, default_interval,
    default_reason, parse_interval, retry_delay,
};
pub use http::{
    Client, ClientError, HOST, HoldDetails, MAX_RESPONSE_BODY, MAX_RESPONSE_HEAD, REQUEST_TIMEOUT,
    Response, Status, Tripped, USAGE_PATH, error_message, task_path, usage_path,
};
pub use render::{
    describe_holder, format_span, format_time, format_until, is_lagged, render_event,
    render_status, render_table, render_tasks, shorten,
};
pub use report::{Usage, UsageTask, render_report, timeline_width};
