//! Reading a response: its status line and headers, and how its body is
//! framed (RFC 9112 section 6.3). The client's half of the grammar; the
//! body itself is read by the caller, with [`super::chunked`] when it is
//! chunked. Depends on httparse for the head's syntax and on
//! [`super::response`] for which statuses carry no content.

use std::fmt;

use super::MAX_HEADERS;
use super::response::may_not_have_content;

/// A response that is not HTTP/1.1 as this grammar frames it: the sentence
/// says what was wrong. The connection cannot be trusted after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError(String);

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResponseError {}

/// A parsed response head: the status and the header lines in order, each
/// value without surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first header of that name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

/// The first header of that name in `headers`, case-insensitively.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses a response head from the start of `bytes`: `Ok(None)` if more
/// bytes are needed, else the head and its length.
///
/// # Errors
/// [`ResponseError`] for bytes that are not an HTTP/1.x response head, or
/// an incomplete head already longer than `max_head`.
pub fn parse_response_head(
    bytes: &[u8],
    max_head: usize,
) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => {
            let status = response
                .code
                .ok_or_else(|| ResponseError("a response without a status".into()))?;
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect();
            Ok(Some((ResponseHead { status, headers }, length)))
        }
        Ok(httparse::Status::Partial) if bytes.len() > max_head => Err(ResponseError(format!(
            "a response head over {max_head} bytes"
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(ResponseError(format!(
            "not an HTTP response ({e}): {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        ))),
    }
}

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a response to HEAD, or a 1xx, 204 or 304.
    Empty,
    Length(usize),
    Chunked,
    /// The body ends when the connection does.
    UntilClose,
}

/// The framing of a response to `method` whose body may be at most
/// `max_body` bytes: `Transfer-Encoding` over `Content-Length`, and a body
/// read to the connection's end when neither is sent.
///
/// # Errors
/// [`ResponseError`] for a transfer coding other than a final `chunked`, an
/// unreadable, conflicting or oversized `Content-Length`.
pub fn body_framing(
    head: &ResponseHead,
    method: &str,
    max_body: usize,
) -> Result<BodyFraming, ResponseError> {
    if method == "HEAD" || may_not_have_content(head.status) {
        return Ok(BodyFraming::Empty);
    }
    if let Some(codings) = head.header("transfer-encoding") {
        let last = codings.rsplit(',').next().unwrap_or_default().trim();
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(BodyFraming::Chunked)
        } else {
            Err(ResponseError(format!(
                "an unsupported transfer coding {codings:?}"
            )))
        };
    }
    let mut lengths = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| parse_content_length(value));
    let Some(length) = lengths.next().transpose()? else {
        return Ok(BodyFraming::UntilClose);
    };
    for other in lengths {
        if other? != length {
            return Err(ResponseError("conflicting Content-Length headers".into()));
        }
    }
    if length > max_body {
        return Err(ResponseError(format!(
            "a body of {length} bytes, over the limit of {max_body}"
        )));
    }
    Ok(BodyFraming::Length(length))
}

/// ASCII digits only: `usize::from_str` would also take `+5`.
fn parse_content_length(value: &str) -> Result<usize, ResponseError> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<usize>().ok())
        .flatten()
        .ok_or_else(|| ResponseError(format!("a Content-Length of {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's limits.
    const MAX_RESPONSE_HEAD: usize = 16 * 1024;
    const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

    fn parse_head(bytes: &[u8]) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
        parse_response_head(bytes, MAX_RESPONSE_HEAD)
    }

    #[test]
    fn response_heads_and_their_framing() {
        let head = |bytes: &[u8]| parse_head(bytes).unwrap().unwrap().0;
        let framing = |head: &ResponseHead, method| body_framing(head, method, MAX_RESPONSE_BODY);
        let cases: Vec<(&[u8], &str, BodyFraming)> = vec![
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                "GET",
                BodyFraming::Length(12),
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                "DELETE",
                BodyFraming::Empty,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                "HEAD",
                BodyFraming::Empty,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                BodyFraming::Chunked,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                "GET",
                BodyFraming::Chunked,
            ),
            (b"HTTP/1.0 200 OK\r\n\r\n", "GET", BodyFraming::UntilClose),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
                "GET",
                BodyFraming::Empty,
            ),
            (
                b"HTTP/1.1 103 Early Hints\r\n\r\n",
                "GET",
                BodyFraming::Empty,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n",
                "GET",
                BodyFraming::Length(12),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                BodyFraming::Chunked,
            ),
        ];
        for (bytes, method, expected) in cases {
            assert_eq!(
                framing(&head(bytes), method).unwrap(),
                expected,
                "{bytes:?}"
            );
        }
        let refused: Vec<&[u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: x\r\n\r\n",
        ];
        for bytes in refused {
            assert!(framing(&head(bytes), "GET").is_err(), "{bytes:?}");
        }
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let endless = [
            b"HTTP/1.1 200 OK\r\n".as_slice(),
            &vec![b'a'; MAX_RESPONSE_HEAD],
        ]
        .concat();
        assert!(parse_head(&endless).is_err());
        let parsed = head(b"HTTP/1.1 409 Conflict\r\ncontent-type:  application/json \r\n\r\n");
        assert_eq!(parsed.status, 409);
        assert_eq!(
            header_value(&parsed.headers, "Content-Type"),
            Some("application/json")
        );
        assert_eq!(parsed.header("CONTENT-TYPE"), Some("application/json"));
    }
}
