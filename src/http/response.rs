//! Response encoding: the status line, `Date`, the content headers and the
//! body, sent only where a response may carry content. Depends on
//! [`super::date`] for the `Date` value and [`crate::text`] for numbers;
//! nothing else of ours.

use super::date::HttpDate;

/// The content type of every JSON answer.
const JSON: &str = "application/json";

/// How many encoded answers' bodies are kept for later answers
/// ([`Response::recycle`]): a turn answers up to 64 requests per
/// connection, and malloc's per-thread cache holds only seven blocks of a
/// size, so a turn's worth of frees and then allocations went to the
/// arena (about 500 instructions a request, callgrind).
const MAX_SPARE_BODIES: usize = 256;

/// The largest body memory kept for reuse: a task's JSON is 300 to 600
/// bytes; a list's is let go.
const MAX_SPARE_BODY: usize = 2048;

std::thread_local! {
    /// Bodies of encoded answers, for later answers on this thread (the
    /// reactor's).
    static SPARE_BODIES: std::cell::RefCell<Vec<Vec<u8>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A response to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// JSON (or text, per `content_type`); empty for 204.
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            body,
            content_type: JSON,
            allow: None,
        }
    }

    /// An empty body with room for at least `capacity` bytes (up to
    /// `MAX_SPARE_BODY`), from an answer already encoded when one was
    /// kept.
    pub fn body_buffer(capacity: usize) -> Vec<u8> {
        let spare = if capacity <= MAX_SPARE_BODY {
            SPARE_BODIES.with_borrow_mut(Vec::pop)
        } else {
            None
        };
        let mut body = spare.unwrap_or_default();
        body.reserve(capacity);
        body
    }

    /// Gives the body's memory back for [`body_buffer`](Self::body_buffer)
    /// once the response is encoded.
    pub fn recycle(self) {
        let mut body = self.body;
        if body.capacity() == 0 || body.capacity() > MAX_SPARE_BODY {
            return;
        }
        body.clear();
        SPARE_BODIES.with_borrow_mut(|spare| {
            if spare.len() < MAX_SPARE_BODIES {
                spare.push(body);
            }
        });
    }

    /// A response with no body (204).
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            body: Vec::new(),
            content_type: "",
            allow: None,
        }
    }

    /// Appends the encoded response to `out`.
    ///
    /// Content is sent only where a response may carry it: never for 1xx,
    /// 204 or 304 (RFC 9110 sections 15.2, 15.3.5, 15.4.5), and never in
    /// answer to HEAD, whose `Content-Length` is still that of the content a
    /// GET would get (RFC 9110 sections 9.3.2 and 8.6).
    pub fn encode(&self, to: Answering, date: &HttpDate, out: &mut Vec<u8>) {
        self.encode_head(to, date, out);
        if self.sends_body(to) {
            out.extend_from_slice(&self.body);
        }
    }

    /// Whether the body goes after the head in answer to `to` (see
    /// [`encode`](Self::encode)).
    pub fn sends_body(&self, to: Answering) -> bool {
        !may_not_have_content(self.status) && !to.head
    }

    /// Appends the status line and the headers, up to and including the
    /// blank line: [`encode`](Self::encode) without the body.
    pub fn encode_head(&self, to: Answering, date: &HttpDate, out: &mut Vec<u8>) {
        use crate::text::push_u64;
        match self.status {
            // The usual answers' status lines in one copy.
            200 => out.extend_from_slice(b"HTTP/1.1 200 OK\r\nDate: "),
            201 => out.extend_from_slice(b"HTTP/1.1 201 Created\r\nDate: "),
            status => {
                out.extend_from_slice(b"HTTP/1.1 ");
                push_u64(out, status.into());
                out.push(b' ');
                out.extend_from_slice(reason(status).as_bytes());
                out.extend_from_slice(b"\r\nDate: ");
            }
        }
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
        let may_have_content = !may_not_have_content(self.status);
        if may_have_content {
            if self.content_type == JSON {
                out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            } else {
                if !self.content_type.is_empty() {
                    out.extend_from_slice(b"Content-Type: ");
                    out.extend_from_slice(self.content_type.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"Content-Length: ");
            }
            push_u64(out, self.body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(allow) = self.allow {
            out.extend_from_slice(b"Allow: ");
            out.extend_from_slice(allow.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !to.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if to.minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a response with `status` never carries content, whatever the
/// request: 1xx, 204 and 304.
pub fn may_not_have_content(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// What the encoding of a response depends on in the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answering {
    /// The request's HTTP minor version.
    pub minor_version: u8,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// Whether the request was HEAD: the response goes without content.
    pub head: bool,
}

impl Answering {
    /// A refusal of a request that could not be framed: the connection
    /// closes after it.
    pub const REFUSAL: Answering = Answering {
        minor_version: 1,
        keep_alive: false,
        head: false,
    };
}

/// The reason phrase for the statuses this daemon sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_encode() {
        let date = HttpDate::at(784_111_777);
        let to = |minor_version, keep_alive, head| Answering {
            minor_version,
            keep_alive,
            head,
        };
        let mut out = Vec::new();
        Response::json(201, b"{}\n".to_vec()).encode(to(1, true, false), &date, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 201 Created\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{}\n"
        );
        out.clear();
        Response::empty(204).encode(to(0, true, false), &date, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        let mut not_allowed = Response::json(405, b"{}".to_vec());
        not_allowed.allow = Some("GET, PUT, DELETE");
        not_allowed.encode(Answering::REFUSAL, &date, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(out.windows(24).any(|w| w == b"Allow: GET, PUT, DELETE\r"));
        assert!(out.windows(17).any(|w| w == b"Connection: close"));
    }

    #[test]
    fn a_response_to_head_has_no_content_but_the_length_a_get_would_get() {
        let date = HttpDate::at(0);
        let head = Answering {
            minor_version: 1,
            keep_alive: true,
            head: true,
        };
        for status in [200, 404, 405] {
            let mut out = Vec::new();
            Response::json(status, b"{\"a\":1}\n".to_vec()).encode(head, &date, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("Content-Length: 8\r\n\r\n"), "{text}");
        }
    }

    #[test]
    fn statuses_without_content_never_carry_it() {
        let date = HttpDate::at(0);
        for status in [100, 101, 204, 304] {
            let mut out = Vec::new();
            let response = Response::json(status, b"{}".to_vec());
            let to = Answering {
                minor_version: 1,
                keep_alive: true,
                head: false,
            };
            response.encode(to, &date, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "{status}: {text}");
            assert!(!text.contains("Content-Length"), "{status}: {text}");
        }
    }
}
