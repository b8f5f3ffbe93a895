//! Numbers appended to a byte buffer as decimal text, without `core::fmt`:
//! every answer and every event line carries several, and going through
//! `write!` cost about 2,000 instructions a request (callgrind, 64
//! clients refreshing); and JSON strings, copied as they are when nothing
//! in them needs escaping; and JSON strings read from a request body
//! without copying ([`JsonText`]). Depends on nothing of ours but
//! `serde` and `serde_json`.

/// Appends `n` in decimal, two digits at a time from [`DIGIT_PAIRS`]: an
/// answer carries four to six numbers (its task's pids, uid and owner,
/// and its length), and a digit at a time cost about 80 instructions each
/// (callgrind, GET).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize;
        n /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[2 * pair..2 * pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[2 * pair..2 * pair + 2]);
    } else {
        start -= 1;
        digits[start] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[start..]);
}

/// "00" to "99", back to back.
pub(crate) const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Appends `n` in decimal, with a `-` when negative.
pub fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Appends `text` as a JSON string, escaped byte for byte as `serde_json`
/// escapes it (only `"`, `\\` and control characters). Sixteen bytes are
/// tested at a time (`block_has_special`); a block that holds a special
/// byte is searched eight bytes at a time (`special_bytes`) for exactly
/// where, and the runs between are copied whole. The last few bytes are
/// tested as the last sixteen, overlapping the block before; a text
/// shorter than a block (a command name) as one block padded with spaces,
/// then a byte at a time only if it holds a special byte. A command line
/// like `bash -c "…"` is in every answer that carries its task's holder
/// and every ended hold's event: `serde_json`'s writer took about 1,800
/// instructions for 200 bytes; a GET's two command lines (about 250
/// bytes, two quotes) took 1,036 instructions with a byte at a time in any
/// block holding a special byte, 871 with the search by words (callgrind).
///
/// A text of [`MEMO_MIN`] to [`MEMO_MAX`] bytes goes through this thread's
/// [`EscapeMemo`]: the same command lines come back in answer after
/// answer.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    if (MEMO_MIN..=MEMO_MAX).contains(&text.len())
        && let Ok(()) = ESCAPED.try_with(|memo| memo.push(out, text))
    {
        return;
    }
    escape_into(out, text);
}

/// Shortest text the memo keeps: below it, escaping (a block or two) costs
/// about what finding the text in the memo does.
const MEMO_MIN: usize = 32;

/// Longest text the memo keeps: room for a holder's parent command line
/// ([`MAX_PARENT_COMMAND`](crate::process::MAX_PARENT_COMMAND)) and a
/// task's reason ([`MAX_REASON_LEN`](crate::tasks::MAX_REASON_LEN)),
/// twice over. With its escapes (six bytes a control byte at most), one
/// entry holds at most 3.5 KiB, four of them 14 KiB a thread (each buffer
/// reserved exactly).
const MEMO_MAX: usize = 512;

/// Texts the memo keeps: a holder's parent command line and a reason each
/// for a couple of holders answered in turn.
const MEMO_ENTRIES: usize = 4;

/// The last few texts [`push_json_string`] escaped, and their escaped
/// form, quotes included. An answer carrying a task carries its holder's
/// parent command line, and most tasks are held by a few processes. With
/// a 120-byte line holding two quotes, the memo took a GET from 5,066 to
/// 4,594 instructions, a create from 12,667 to 12,194 and a delete (its
/// event line carries the ended hold's lines) from 9,930 to 9,514
/// (callgrind, `scripts/instructions.sh`). A text is found by its bytes,
/// not by its address: every connection reads its holder from `/proc`
/// into its own copy. A new text replaces the entry used least recently,
/// so that a list whose tasks each have a reason of their own does not
/// push out the command line every task shares.
struct EscapeMemo {
    entries: std::cell::RefCell<[MemoEntry; MEMO_ENTRIES]>,
    /// Counts the memo's uses: an entry's `used` is the count at its last.
    uses: std::cell::Cell<u64>,
}

/// A text and its JSON string, each buffer reused (at most its largest
/// text's size: reserved exactly) as entries are replaced.
struct MemoEntry {
    raw: Vec<u8>,
    json: Vec<u8>,
    used: u64,
}

std::thread_local! {
    static ESCAPED: EscapeMemo = const {
        EscapeMemo {
            entries: std::cell::RefCell::new(
                [const {
                    MemoEntry {
                        raw: Vec::new(),
                        json: Vec::new(),
                        used: 0,
                    }
                }; MEMO_ENTRIES],
            ),
            uses: std::cell::Cell::new(0),
        }
    };
}

impl EscapeMemo {
    /// Appends `text` as a JSON string, from the memo when it holds it;
    /// else escapes it and keeps it in place of the entry used least
    /// recently.
    fn push(&self, out: &mut Vec<u8>, text: &str) {
        let uses = self.uses.get() + 1;
        self.uses.set(uses);
        let mut entries = self.entries.borrow_mut();
        if let Some(entry) = entries
            .iter_mut()
            .find(|entry| entry.raw == text.as_bytes())
        {
            out.extend_from_slice(&entry.json);
            entry.used = uses;
            return;
        }
        let start = out.len();
        escape_into(out, text);
        let Some(entry) = entries.iter_mut().min_by_key(|entry| entry.used) else {
            return;
        };
        let json = &out[start..];
        entry.raw.clear();
        entry.raw.reserve_exact(text.len());
        entry.raw.extend_from_slice(text.as_bytes());
        entry.json.clear();
        entry.json.reserve_exact(json.len());
        entry.json.extend_from_slice(json);
        entry.used = uses;
    }
}

/// [`push_json_string`] without the memo.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `bytes[copied..]` need no escape up to the next special byte and
    // are not written yet.
    let mut copied = 0;
    if bytes.len() < 16 {
        // A command name (`/proc/PID/comm`, at most 15 bytes) is in every
        // answer and event line carrying a holder: tested as one block,
        // padded with a byte that needs no escape, it is copied whole when
        // it needs none (tested a byte at a time, a one-client GET's turn
        // took 7,249 instructions, now 7,171; callgrind).
        let mut block = [b' '; 16];
        block[..bytes.len()].copy_from_slice(bytes);
        if !block_has_special(&block) {
            out.extend_from_slice(bytes);
            out.push(b'"');
            return;
        }
        for (at, &byte) in bytes.iter().enumerate() {
            if is_special(byte) {
                out.extend_from_slice(&bytes[copied..at]);
                push_escape(out, byte);
                copied = at + 1;
            }
        }
    } else {
        let (blocks, rest) = bytes.as_chunks::<16>();
        for (n, block) in blocks.iter().enumerate() {
            if block_has_special(block) {
                copied = escape_block(out, bytes, copied, 16 * n, block, 0);
            }
        }
        if !rest.is_empty() {
            // The last sixteen bytes: those before `rest` were searched
            // with the last whole block.
            let at = bytes.len() - 16;
            let (last, _) = bytes[at..].as_chunks::<16>();
            if let Some(block) = last.first()
                && block_has_special(block)
            {
                copied = escape_block(out, bytes, copied, at, block, 16 - rest.len());
            }
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

/// Writes `bytes[copied..]` up to each special byte of `block` (the
/// sixteen bytes from `at`) past its first `skip`, and that byte's escape;
/// returns where the unwritten bytes now start.
fn escape_block(
    out: &mut Vec<u8>,
    bytes: &[u8],
    mut copied: usize,
    at: usize,
    block: &[u8; 16],
    skip: usize,
) -> usize {
    for (half, word) in block.as_chunks::<8>().0.iter().enumerate() {
        let mut hits = special_bytes(u64::from_le_bytes(*word));
        // The bytes of this word among the first `skip`: not this block's.
        let skipped = skip.saturating_sub(8 * half).min(8);
        hits &= u64::MAX.checked_shl(8 * skipped as u32).unwrap_or(0);
        while hits != 0 {
            let i = at + 8 * half + (hits.trailing_zeros() / 8) as usize;
            out.extend_from_slice(&bytes[copied..i]);
            push_escape(out, bytes[i]);
            copied = i + 1;
            hits &= hits - 1;
        }
    }
    copied
}

/// A byte a JSON string must escape.
fn is_special(byte: u8) -> bool {
    (byte < 0x20) | (byte == b'"') | (byte == b'\\')
}

/// The escape `serde_json` writes for a byte [`is_special`] says needs
/// one: the short forms, else `\u00XX` in lowercase hex.
fn push_escape(out: &mut Vec<u8>, byte: u8) {
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
            return;
        }
    };
    out.push(b'\\');
    out.push(short);
}

/// Whether any of sixteen bytes is [`is_special`]: every byte tested
/// without stopping at the first, which the compiler turns into a few
/// vector compares for an array of known length (a slice from
/// `chunks_exact` was tested a byte at a time, about 160 instructions a
/// GET).
#[inline]
fn block_has_special(block: &[u8; 16]) -> bool {
    block.iter().fold(false, |hit, &b| hit | is_special(b))
}

/// The high bit of each byte of `w` that is [`is_special`], and no other
/// bit: exact, so a set bit's place says which byte (little-endian: the
/// lowest set bit is the first byte in the text).
fn special_bytes(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A byte's low seven bits plus 0x7f carry into its high bit unless
    // they are zero, and never into the next byte; or-ing in the byte
    // itself sets the high bit of any byte of 0x80 and over. What is left
    // clear is a zero byte.
    let zero = |x: u64| !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
    // Likewise plus 0x60 carries into the high bit when the low seven
    // bits are 0x20 or more: clear is below 0x20.
    let control = !(((w & LOW7).wrapping_add(ONES * 0x60)) | w | LOW7);
    control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))
}

/// A JSON string field of a request body, borrowed from the body when it
/// has no escapes (serde's own `Cow<str>` always copies inside an
/// `Option`). Refuses anything but a string as serde does a `String`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText<'a>(pub std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Text<'a> {
            type Value = JsonText<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // The words serde uses for a `String`.
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(text.into()))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonText(text.to_owned().into()))
            }
            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(JsonText(text.into()))
            }
        }
        deserializer.deserialize_str(Text(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_display_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            4_294_967_295,
            1 << 53,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
        // Each count of digits, odd and even, at both its ends.
        let mut power = 1u64;
        for _ in 0..19 {
            power *= 10;
            for n in [power - 1, power, power + 7, power / 2 * 3] {
                let mut out = Vec::new();
                push_u64(&mut out, n);
                assert_eq!(out, n.to_string().into_bytes());
            }
        }
        for n in [0, -1, 1, -10, i64::MIN, i64::MIN + 1, i64::MAX] {
            let mut out = Vec::new();
            push_i64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn every_byte_that_needs_escaping_is_found_at_every_place_in_a_word() {
        // The exact mask: the high bit of each special byte, nothing else.
        let slow = |word: [u8; 8]| {
            word.iter().enumerate().fold(0u64, |mask, (i, &b)| {
                mask | (u64::from(is_special(b)) << (8 * i + 7))
            })
        };
        for at in 0..8 {
            for fill in [b'a', 0xff, 0x80, b' ', 0x00, b'"', 0x1f, 0x20, 0x5c, 0x7f] {
                for b in 0..=255u8 {
                    let mut word = [fill; 8];
                    word[at] = b;
                    assert_eq!(
                        special_bytes(u64::from_le_bytes(word)),
                        slow(word),
                        "{word:?}"
                    );
                }
            }
        }
        // Mixed words, where one byte could hide or fake another.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut word = state.to_le_bytes();
            // Mostly near the edges that matter.
            for (i, byte) in word.iter_mut().enumerate() {
                *byte = match (state >> (3 * i)) % 6 {
                    0 => *byte,
                    1 => 0x1e + *byte % 4,
                    2 => 0x7e + *byte % 4,
                    3 => 0x5b + *byte % 3,
                    4 => 0x21 + *byte % 3,
                    _ => *byte % 2,
                };
            }
            assert_eq!(
                special_bytes(u64::from_le_bytes(word)),
                slow(word),
                "{word:?}"
            );
            let mut block = [0u8; 16];
            block[..8].copy_from_slice(&word);
            block[8..].copy_from_slice(&word.map(|b| b.wrapping_add(1)));
            assert_eq!(
                block_has_special(&block),
                block.iter().any(|&b| is_special(b)),
                "{block:?}"
            );
        }
    }

    #[test]
    fn strings_read_as_serde_json_writes_them() {
        for text in [
            "",
            "claude -p 'go'",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{1}",
            "été ✓",
            "\u{7f}",
            "bash -c \"while sleep 30; do sprite-env tasks refresh build; done\" --and \\ more",
        ] {
            let mut out = b"x".to_vec();
            push_json_string(&mut out, text);
            let expected = format!("x{}", serde_json::to_string(text).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{text:?}");
        }
        // Every ASCII character, alone and at every place around a block.
        for c in (0..=0x7fu8).map(char::from) {
            for at in [0, 1, 15, 16, 17, 31, 40] {
                let mut text: String = "a".repeat(40);
                text.insert(at, c);
                let mut out = Vec::new();
                push_json_string(&mut out, &text);
                assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
            }
        }
        // One special (or multi-byte) character at every place of every
        // length around the block sizes and the overlapping tail.
        for len in 0..=49 {
            for at in 0..=len {
                for c in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é', ' '] {
                    let mut text: String = "a".repeat(len);
                    text.insert(at, c);
                    let mut out = Vec::new();
                    push_json_string(&mut out, &text);
                    assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
                }
            }
        }
        // Random mixes of plain, special and multi-byte characters.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(state % 70) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(match state % 10 {
                    0 => char::from((state >> 8) as u8 % 0x20),
                    1 => '"',
                    2 => '\\',
                    3 => 'é',
                    _ => char::from(b' ' + (state >> 8) as u8 % 95),
                });
            }
            let mut out = Vec::new();
            push_json_string(&mut out, &text);
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    /// Texts found in the memo are written as escaping them writes them,
    /// after whatever the buffer held; texts of one length that differ are
    /// not taken for each other; the oldest entry makes room; texts
    /// outside the memo's bounds are escaped every time.
    #[test]
    fn the_memo_answers_as_escaping_does() {
        let long = |tail: &str| format!("bash -c \"sprite-env tasks refresh {tail}\" \\ \n");
        let texts: Vec<String> = vec![
            long("a"),
            long("b"),
            long("c"),
            long("d"),
            long("e"),
            "x".repeat(MEMO_MIN - 1),
            "\"".repeat(MEMO_MIN),
            "\u{1}".repeat(MEMO_MAX),
            "y".repeat(MEMO_MAX + 1),
        ];
        let in_memo = |text: &str| {
            ESCAPED.with(|memo| {
                memo.entries
                    .borrow()
                    .iter()
                    .any(|entry| entry.raw == text.as_bytes())
            })
        };
        let order = [
            0, 0, 1, 0, 2, 3, 4, 0, 1, 5, 6, 6, 7, 7, 8, 8, 4, 3, 2, 1, 0, 0,
        ];
        for (step, &i) in order.iter().enumerate() {
            let text = &texts[i];
            let mut out = b"[1,".to_vec();
            push_json_string(&mut out, text);
            let expected = format!("[1,{}", serde_json::to_string(text).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), expected, "step {step}");
            let kept = (MEMO_MIN..=MEMO_MAX).contains(&text.len());
            assert_eq!(in_memo(text), kept, "step {step}: {} bytes", text.len());
        }
        // Four entries: of the five long texts pushed last (4, 3, 2, 1, 0),
        // the first has made room for the last.
        assert!(!in_memo(&texts[4]));
        assert!((0..4).all(|i| in_memo(&texts[i])));
        // The entry used least recently makes room: a text used between
        // each new one stays however many come.
        for (i, tail) in ["f", "g", "h", "i", "j", "k"].into_iter().enumerate() {
            let mut out = Vec::new();
            push_json_string(&mut out, &texts[0]);
            push_json_string(&mut out, &long(tail));
            assert!(in_memo(&texts[0]), "after {} new texts", i + 1);
            assert!(in_memo(&long(tail)));
        }
        // Each entry's buffers are no larger than its largest text needs.
        ESCAPED.with(|memo| {
            for entry in memo.entries.borrow().iter() {
                assert!(entry.raw.capacity() <= MEMO_MAX, "{}", entry.raw.capacity());
                assert!(
                    entry.json.capacity() <= 6 * MEMO_MAX + 2,
                    "{}",
                    entry.json.capacity()
                );
            }
        });
    }

    #[test]
    fn a_body_string_is_borrowed_unless_escaped_and_refused_as_serde_refuses_a_string() {
        use std::borrow::Cow;
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            name: Option<JsonText<'a>>,
        }
        let plain: Body = serde_json::from_str(r#"{"name":"agent"}"#).unwrap();
        assert!(matches!(plain.name, Some(JsonText(Cow::Borrowed("agent")))));
        let escaped: Body = serde_json::from_str(r#"{"name":"a\u0067ent"}"#).unwrap();
        assert!(matches!(escaped.name, Some(JsonText(Cow::Owned(ref s))) if s == "agent"));
        let null: Body = serde_json::from_str(r#"{"name":null}"#).unwrap();
        assert!(null.name.is_none());
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Owned {
            name: Option<String>,
        }
        for wrong in [
            r#"{"name":5}"#,
            r#"{"name":[1]}"#,
            r#"{"name":true}"#,
            r#"{"name":{}}"#,
        ] {
            let ours = serde_json::from_str::<Body>(wrong)
                .err()
                .unwrap()
                .to_string();
            let serde = serde_json::from_str::<Owned>(wrong)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, serde, "{wrong}");
        }
    }
}
