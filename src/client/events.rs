//! The stream of `GET /v1/events` once its head has arrived: chunked (or,
//! from an HTTP/1.0 peer, open-ended) bytes cut into bounded lines, with no
//! deadline, since the stream is silent while nothing changes. The opening
//! request is [`super::http::Client::events`]'s. Depends on
//! [`crate::http`] for the chunked decoder and on [`super::http`] for
//! [`ClientError`]; [`LineSplitter`] is pure and tested without a socket.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::http::ClientError;
use crate::http::{BodyFraming, ChunkLimits, ChunkedDecoder};

/// Longest line of an event stream. An event is about 200 bytes; a task
/// name is at most 128.
pub const MAX_EVENT_LINE: usize = 64 * 1024;

/// The bounds of the event stream's chunked body: the grammar's line and
/// trailer limits and no total, since the stream lasts as long as the
/// client listens; each of its lines is bounded by [`MAX_EVENT_LINE`].
const EVENT_STREAM_CHUNKS: ChunkLimits = ChunkLimits::with_max_body(usize::MAX);

/// Splits a byte stream into `\n`-terminated lines of bounded length.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            max_line,
        }
    }

    /// Adds bytes and returns the lines they complete, without their `\n`
    /// (and without a `\r` before it).
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for a line longer than the maximum.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lines.push(line);
            } else {
                self.partial.push(byte);
                if self.partial.len() > self.max_line {
                    return Err(ClientError::Protocol(format!(
                        "an event line over {} bytes",
                        self.max_line
                    )));
                }
            }
        }
        Ok(lines)
    }

    /// What is left after the stream ended: an unterminated last line.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.partial);
        (!rest.is_empty()).then_some(rest)
    }
}

/// An open `GET /v1/events` stream: one JSON object per line.
#[derive(Debug)]
pub struct EventStream {
    stream: UnixStream,
    /// `None` for a body that ends with the connection (HTTP/1.0).
    chunked: Option<ChunkedDecoder>,
    lines: LineSplitter,
    /// Lines decoded but not yet handed out.
    backlog: VecDeque<Vec<u8>>,
    /// The body has ended (last chunk, or end of stream).
    ended: bool,
}

impl EventStream {
    /// The stream after its head: `framing` is the response's, and
    /// `already_read` what was read past the head.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for a body that is neither chunked nor
    /// open-ended, or broken framing in `already_read`.
    pub(super) fn open(
        stream: UnixStream,
        framing: BodyFraming,
        already_read: &[u8],
    ) -> Result<EventStream, ClientError> {
        let chunked = match framing {
            BodyFraming::Chunked => Some(ChunkedDecoder::new(EVENT_STREAM_CHUNKS)),
            BodyFraming::UntilClose => None,
            BodyFraming::Length(_) | BodyFraming::Empty => {
                return Err(ClientError::Protocol(
                    "the event stream is neither chunked nor open-ended".into(),
                ));
            }
        };
        let mut events = EventStream {
            stream,
            chunked,
            lines: LineSplitter::new(MAX_EVENT_LINE),
            backlog: VecDeque::new(),
            ended: false,
        };
        events.feed(already_read)?;
        Ok(events)
    }

    /// Bounds each wait of [`next_line`](Self::next_line) for bytes: past
    /// it, `next_line` fails with [`ClientError::Io`] of kind `WouldBlock`
    /// or `TimedOut`. `None` waits for as long as the stream is silent.
    ///
    /// # Errors
    /// [`ClientError::Io`] for a zero timeout or a socket that refuses it.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(ClientError::Io)
    }

    /// The next line (without its newline); `None` once the daemon ended the
    /// stream. Blocks until a line arrives.
    ///
    /// # Errors
    /// [`ClientError::Io`] if the connection fails, [`ClientError::Protocol`]
    /// for broken framing or an oversized line.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        /// Bytes asked of one `read`.
        const READ_SIZE: usize = 8192;
        loop {
            if let Some(line) = self.backlog.pop_front() {
                return Ok(Some(line));
            }
            if self.ended {
                return Ok(self.lines.finish());
            }
            let mut buffer = [0u8; READ_SIZE];
            let read = loop {
                match self.stream.read(&mut buffer) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ClientError::Io(e)),
                }
            };
            if read == 0 {
                if self.chunked.is_some() {
                    return Err(ClientError::Protocol(
                        "the daemon closed the event stream without ending it".into(),
                    ));
                }
                self.ended = true;
                continue;
            }
            self.feed(&buffer[..read])?;
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let lines = match &mut self.chunked {
            Some(decoder) => {
                let mut data = Vec::new();
                decoder.decode(bytes, &mut data)?;
                if decoder.is_done() {
                    self.ended = true;
                }
                self.lines.push(&data)?
            }
            None => self.lines.push(bytes)?,
        };
        self.backlog.extend(lines);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_pushes_and_stay_bounded() {
        let mut lines = LineSplitter::new(8);
        assert_eq!(lines.push(b"ab").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(
            lines.push(b"c\nde\r\nf").unwrap(),
            vec![b"abc".to_vec(), b"de".to_vec()]
        );
        assert_eq!(
            lines.push(b"\n\n").unwrap(),
            vec![b"f".to_vec(), b"".to_vec()]
        );
        assert_eq!(lines.push(b"tail").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(lines.finish(), Some(b"tail".to_vec()));
        assert_eq!(lines.finish(), None);
        assert!(lines.push(b"123456789").is_err());
    }
}
