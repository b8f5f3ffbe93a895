//! The chunked transfer coding (RFC 9112 section 7.1), decoded strictly and
//! incrementally: the one decoder behind the daemon's request bodies and the
//! client's responses and event stream. Pure; depends on nothing else of
//! ours but the limits in [`super`].
//!
//! Strict means: at least one hex digit per size, chunk extensions only as
//! their grammar allows, CRLF line endings only, the CRLF after each chunk's
//! data checked, trailer lines that are field lines. Each byte is judged as
//! it arrives, so framing that can no longer become valid is refused at
//! once, whatever the split of the input; needing more bytes is not an
//! error. Every bound (size line, trailer section, decoded body) is a
//! parameter, [`ChunkLimits`].

use std::fmt;

use super::{MAX_CHUNK_LINE, MAX_TRAILER_BYTES};

/// The bounds of one chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Longest chunk-size line, extensions and CRLF included.
    pub max_line: usize,
    /// Largest trailer section: every field line must fit within it, CRLF
    /// included, but for the CRLF of the last one; the final empty line is
    /// not counted.
    pub max_trailer_bytes: usize,
    /// Most decoded bytes: a chunk whose size passes what is left of it is
    /// refused as soon as its size line shows it.
    pub max_body: usize,
}

impl ChunkLimits {
    /// The grammar's line and trailer limits ([`MAX_CHUNK_LINE`],
    /// [`MAX_TRAILER_BYTES`]) with a body of at most `max_body` bytes.
    pub const fn with_max_body(max_body: usize) -> ChunkLimits {
        ChunkLimits {
            max_line: MAX_CHUNK_LINE,
            max_trailer_bytes: MAX_TRAILER_BYTES,
            max_body,
        }
    }
}

/// Why a chunked body was refused. After it, nothing on the stream can be
/// trusted: the connection must end.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkedError {
    /// Not chunked framing as RFC 9112 section 7.1 writes it; says what.
    Malformed(&'static str),
    /// A chunk larger than the `room` bytes left under the body limit.
    TooLarge { room: usize },
    /// A trailer section larger than `max` bytes.
    TrailersTooLarge { max: usize },
}

impl ChunkedError {
    /// The status a server answers with: 400, 413 or 431.
    pub fn status(&self) -> u16 {
        match self {
            ChunkedError::Malformed(_) => 400,
            ChunkedError::TooLarge { .. } => 413,
            ChunkedError::TrailersTooLarge { .. } => 431,
        }
    }
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkedError::Malformed(what) => write!(f, "malformed chunked body: {what}"),
            ChunkedError::TooLarge { room } => {
                write!(
                    f,
                    "a chunk is larger than the {room} bytes left for the body"
                )
            }
            ChunkedError::TrailersTooLarge { max } => {
                write!(f, "the chunked trailer section is larger than {max} bytes")
            }
        }
    }
}

impl std::error::Error for ChunkedError {}

/// An incremental decoder of one chunked body.
///
/// Invariant: the data appended to the caller's output so far is at most
/// `limits.max_body` bytes (`decoded`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    limits: ChunkLimits,
    state: State,
    /// Chunk data handed out so far.
    decoded: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: where in its grammar, the size so far and the
    /// line's length so far.
    SizeLine { at: At, size: usize, len: usize },
    /// Inside a chunk's data, this many bytes left.
    Data { left: usize },
    /// After a chunk's data: this many bytes of its CRLF seen.
    DataEnd { seen: usize },
    /// In the trailer section: the current line without its line end,
    /// whether its CR has arrived, and the bytes of the lines before it.
    Trailers {
        line: Vec<u8>,
        cr: bool,
        before: usize,
    },
    /// The last chunk and the trailer section have been read.
    Done,
}

/// Where in a chunk-size line the scanner is, per the grammar of RFC 9112
/// section 7.1.1 with CRLF only:
/// `1*HEXDIG *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Size,
    /// Whitespace after the size or a value: only `;` may follow.
    Gap,
    /// After `;`: whitespace, then a name.
    NameStart,
    Name,
    /// Whitespace after a name: `=` or `;` may follow.
    AfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ValueStart,
    Token,
    Quoted,
    QuotedEscape,
    /// After a closing quote: whitespace, `;` or the line end.
    AfterQuoted,
    Cr,
}

const SIZE_LINE_START: State = State::SizeLine {
    at: At::Size,
    size: 0,
    len: 0,
};

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new(limits: ChunkLimits) -> ChunkedDecoder {
        ChunkedDecoder {
            limits,
            state: SIZE_LINE_START,
            decoded: 0,
        }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what it can of `input`, appending chunk data to `out`, and
    /// returns how many bytes of `input` it used: all of them, unless the
    /// body ended inside `input` (the rest belongs to what follows it).
    ///
    /// # Errors
    /// [`ChunkedError`] for framing that is not strict chunked or passes a
    /// limit. The decoder must not be used after an error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        let mut at = 0;
        while at < input.len() {
            match &mut self.state {
                State::Done => break,
                State::Data { left } => {
                    let take = (*left).min(input.len() - at);
                    out.extend_from_slice(&input[at..at + take]);
                    self.decoded += take;
                    at += take;
                    *left -= take;
                    if *left == 0 {
                        self.state = State::DataEnd { seen: 0 };
                    }
                }
                State::DataEnd { seen } => {
                    if input[at] != b"\r\n"[*seen] {
                        return Err(ChunkedError::Malformed(
                            "chunk data is not followed by CRLF",
                        ));
                    }
                    at += 1;
                    *seen += 1;
                    if *seen == 2 {
                        self.state = SIZE_LINE_START;
                    }
                }
                State::SizeLine { .. } => {
                    self.size_line_byte(input[at])?;
                    at += 1;
                }
                State::Trailers { .. } => {
                    self.trailer_byte(input[at])?;
                    at += 1;
                }
            }
        }
        Ok(at)
    }

    /// Judges one byte of a chunk-size line. At its end, moves to the
    /// chunk's data, or to the trailers after the last chunk.
    fn size_line_byte(&mut self, byte: u8) -> Result<(), ChunkedError> {
        let room = self.limits.max_body.saturating_sub(self.decoded);
        let State::SizeLine { at, size, len } = &mut self.state else {
            return Ok(());
        };
        if *len >= self.limits.max_line {
            return Err(ChunkedError::Malformed("a chunk-size line is too long"));
        }
        let first = *len == 0;
        *len += 1;
        if (*at, byte) == (At::Cr, b'\n') {
            self.state = match *size {
                0 => State::Trailers {
                    line: Vec::new(),
                    cr: false,
                    before: 0,
                },
                left => State::Data { left },
            };
            return Ok(());
        }
        if *at == At::Size && byte.is_ascii_hexdigit() {
            let digit = (byte as char).to_digit(16).unwrap_or(0) as usize;
            *size = size
                .checked_mul(16)
                .and_then(|size| size.checked_add(digit))
                .filter(|&size| size <= room)
                .ok_or(ChunkedError::TooLarge { room })?;
            return Ok(());
        }
        *at = next_in_size_line(*at, byte, first)?;
        Ok(())
    }

    /// Takes one byte of the trailer section: field lines up to an empty
    /// line, each checked and then ignored.
    fn trailer_byte(&mut self, byte: u8) -> Result<(), ChunkedError> {
        let State::Trailers { line, cr, before } = &mut self.state else {
            return Ok(());
        };
        let room = self.limits.max_trailer_bytes.saturating_sub(*before);
        if *cr {
            if byte != b'\n' {
                return Err(ChunkedError::Malformed("bare CR in a line"));
            }
            if line.is_empty() {
                self.state = State::Done;
                return Ok(());
            }
            if !is_field_line(line) {
                return Err(ChunkedError::Malformed(
                    "a trailer line is not a header field",
                ));
            }
            *before += line.len() + 2;
            line.clear();
            *cr = false;
            return Ok(());
        }
        match byte {
            b'\n' => return Err(ChunkedError::Malformed("bare LF line ending")),
            b'\r' => *cr = true,
            _ if line.len() >= room => {
                return Err(ChunkedError::TrailersTooLarge {
                    max: self.limits.max_trailer_bytes,
                });
            }
            _ => line.push(byte),
        }
        Ok(())
    }
}

/// The next place in a chunk-size line after `byte`, for every byte but a
/// size digit and the final LF.
fn next_in_size_line(at: At, byte: u8, first: bool) -> Result<At, ChunkedError> {
    let blank = byte == b' ' || byte == b'\t';
    Ok(match (at, byte) {
        (At::Cr, _) => return Err(ChunkedError::Malformed("bare CR in a chunk-size line")),
        (_, b'\n') => return Err(ChunkedError::Malformed("bare LF line ending")),
        (At::Size, _) if first => {
            return Err(ChunkedError::Malformed(
                "a chunk size must start with a hexadecimal digit",
            ));
        }
        (At::Quoted, b'"') => At::AfterQuoted,
        (At::Quoted, b'\\') => At::QuotedEscape,
        (At::Quoted, _) if blank || is_text(byte) => At::Quoted,
        (At::QuotedEscape, _) if blank || is_text(byte) => At::Quoted,
        (At::Size | At::Token | At::Name | At::AfterQuoted, b'\r') => At::Cr,
        (At::Name, _) if blank => At::AfterName,
        (At::Size | At::Token | At::AfterQuoted | At::Gap, _) if blank => At::Gap,
        (At::AfterName, _) if blank => At::AfterName,
        (At::NameStart | At::ValueStart, _) if blank => at,
        (At::Size | At::Gap | At::Name | At::AfterName | At::Token | At::AfterQuoted, b';') => {
            At::NameStart
        }
        (At::NameStart | At::Name, _) if is_tchar(byte) => At::Name,
        (At::Name | At::AfterName, b'=') => At::ValueStart,
        (At::ValueStart, b'"') => At::Quoted,
        (At::ValueStart | At::Token, _) if is_tchar(byte) => At::Token,
        _ => {
            return Err(ChunkedError::Malformed(
                "a chunk-size line does not follow RFC 9112 section 7.1.1",
            ));
        }
    })
}

/// RFC 9110 section 5.6.2: a token character.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A visible character or obs-text (RFC 9110 section 5.5): what a field
/// value or quoted string may hold besides whitespace.
fn is_text(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) || byte >= 0x80
}

/// RFC 9112 section 5: `token ":" OWS field-value OWS`, no whitespace
/// before the colon, no control characters.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && value.iter().all(|&b| b == b' ' || b == b'\t' || is_text(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of up to 16 MiB, as the client reads.
    const LIMITS: ChunkLimits = ChunkLimits::with_max_body(16 * 1024 * 1024);

    /// Feeds `input` to a fresh decoder in pieces of `step` bytes.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
        let mut decoder = ChunkedDecoder::new(LIMITS);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            used += decoder.decode(piece, &mut out)?;
            if decoder.is_done() {
                break;
            }
        }
        Ok((out, decoder.is_done(), used))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let cases: Vec<(&[u8], &[u8], bool)> = vec![
            (b"0\r\n\r\n", b"", true),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", true),
            (
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
                true,
            ),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", true),
            (
                b"a;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
                b"0123456789",
                true,
            ),
            // Not finished yet: what came so far.
            (b"5\r\nhel", b"hel", false),
            (b"5\r\nhello\r\n", b"hello", false),
        ];
        for (input, expected, done) in cases {
            for step in 1..=input.len() {
                let (out, finished, _) = decode_in_steps(input, step)
                    .unwrap_or_else(|e| panic!("{input:?} step {step}: {e}"));
                assert_eq!(out, expected, "{input:?} step {step}");
                assert_eq!(finished, done, "{input:?} step {step}");
            }
        }
        // Bytes after the end are left for the caller.
        let (_, done, used) = decode_in_steps(b"0\r\n\r\nNEXT", 100).unwrap();
        assert!(done);
        assert_eq!(used, 5);
    }

    #[test]
    fn chunked_framing_errors() {
        let long_line = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        // The limit holds the field lines; the last one's CRLF may end past
        // it, so one line more than fits.
        let big_trailers = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILER_BYTES / 6 + 2));
        let cases: Vec<&[u8]> = vec![
            b"\r\n",
            b"x\r\n",
            b"+5\r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"5\r\nhello\r0",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n",
            long_line.as_bytes(),
            big_trailers.as_bytes(),
        ];
        for input in cases {
            assert!(
                decode_in_steps(input, input.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(decode_in_steps(input, 1).is_err());
        }
    }

    #[test]
    fn the_verdict_does_not_depend_on_the_split() {
        let cases: &[&[u8]] = &[
            b"5;a=\"quoted \\\" text\"\r\nhello\r\n0\r\n\r\n",
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"5;a=b c\r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX-A : 1\r\n\r\n",
            b"0\r\nX-A: \x01\r\n\r\n",
            b"0\r\nX-A: 1\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r",
        ];
        for input in cases {
            let whole = decode_in_steps(input, input.len());
            for step in 1..input.len() {
                assert_eq!(decode_in_steps(input, step), whole, "{input:?} step {step}");
            }
        }
    }

    #[test]
    fn limits_are_parameters() {
        let tight = ChunkLimits {
            max_line: 4,
            max_trailer_bytes: 8,
            max_body: 5,
        };
        let verdict = |input: &[u8]| {
            let mut out = Vec::new();
            ChunkedDecoder::new(tight)
                .decode(input, &mut out)
                .map_err(|e| e.status())
        };
        assert_eq!(verdict(b"5\r\nhello\r\n0\r\n\r\n"), Ok(15));
        assert_eq!(verdict(b"3\r\nhel\r\n3\r\n"), Err(413));
        assert_eq!(verdict(b"5;ab\r\n"), Err(400));
        assert_eq!(verdict(b"0\r\nX: 123456\r\n"), Err(431));
        assert_eq!(verdict(b"0\r\nX: 12345\r\n\r\n"), Ok(15));
    }
}
