//! HTTP/1.1 without I/O: one grammar for the daemon and the client.
//!
//! - [`request`]: request framing for the daemon ([`parse`], [`Limits`]).
//! - [`response`]: response encoding for the daemon ([`Response`]).
//! - [`response_head`]: response heads and their body framing, for the
//!   client ([`parse_response_head`], [`body_framing`]).
//! - [`chunked`]: the one strict, incremental chunked decoder both use.
//! - [`date`]: the `Date` header ([`HttpDate`]).
//!
//! httparse checks the request line, status line and header syntax;
//! everything else is ours: message framing (RFC 9112 section 6),
//! `Connection`, `Expect`, chunked decoding, and every size limit. Depends
//! on nothing else of ours but [`crate::text`] (numbers as text).
//!
//! Framing decisions for requests, following hyper's server:
//! - `Content-Length` is ASCII digits only; differing duplicates are refused.
//! - `Transfer-Encoding` on HTTP/1.0 is refused. Its codings must end in one
//!   `chunked`; any other coding is 501 (we implement none).
//! - `Transfer-Encoding` with `Content-Length`: the length is ignored, the body
//!   is read as chunked, and the connection is closed after the response, so a
//!   peer that disagrees about where the body ends can smuggle nothing.
//! - `Expect: 100-continue` is honoured on HTTP/1.1 once the head is accepted;
//!   any other expectation is 417.
//!
//! Beyond framing: `Host` is required on HTTP/1.1, at most once in any
//! version, and must be a host with an optional port (RFC 9112 section 3.2);
//! a malformed request line is 400 and only a well-formed unsupported
//! version is 505; the target is ASCII. [`Response::encode`] dates every
//! response with an [`HttpDate`] the caller keeps per second, and never
//! sends content with 1xx, 204, 304 or in answer to HEAD. docs/http.md has
//! the table of answers.

pub mod chunked;
pub mod date;
pub mod request;
pub mod response;
pub mod response_head;

pub use chunked::{ChunkLimits, ChunkedDecoder, ChunkedError};
pub use date::HttpDate;
pub use request::{
    CONTINUE, HttpError, Limits, Method, Parsed, Progress, Request, parse, parse_reusing,
    skip_empty_lines,
};
pub use response::{Answering, Response, may_not_have_content, reason};
pub use response_head::{
    BodyFraming, ResponseError, ResponseHead, body_framing, header_value, parse_response_head,
};

/// Most header lines in a request (431 past it) or a response. curl sends 3
/// to 5, browsers about 20, the daemon answers with at most 5; httparse
/// needs a caller-owned array of this size.
pub const MAX_HEADERS: usize = 32;

/// Longest chunk-size line, extensions and CRLF included (400 past it), in
/// a request or a response. Neither the daemon nor its clients send
/// extensions, and a size needs at most 16 hex digits; 256 bytes still
/// leaves room for a few short extensions while a hostile peer cannot grow
/// the line without bound.
pub const MAX_CHUNK_LINE: usize = 256;

/// Largest trailer section of a chunked body (431 past it), in a request or
/// a response. Neither the daemon nor curl sends trailers; 4 KiB, half the
/// default head limit, is room for a few checksum fields, and it bounds what
/// a request can add past its body ([`Limits::max_encoded_body`]).
pub const MAX_TRAILER_BYTES: usize = 4096;
