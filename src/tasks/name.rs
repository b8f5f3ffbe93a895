//! The rules for what a client may write: a task name ([`TaskName`], with
//! the reason it was refused) and a reason ([`check_reason`]).
//!
//! Pure text checks; depends on nothing of ours.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// Longest task name in bytes. Long enough for a UUID with a prefix or a
/// `host:agent@pid` label; short enough that a list of many tasks stays small.
pub const MAX_NAME_LEN: usize = 128;

/// A valid task name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits
/// and `.` `_` `-` `:` `@`, starting with a letter or digit.
///
/// The set is safe to print in a log line or a shell, needs no escaping in a
/// URL path, and cannot be `.` or `..`.
///
/// Cheap to clone: a name sits in the state, its deadline index, the
/// batch, the change, the event and the answer, and a clone is a copy of
/// 32 bytes or, for a long name, a reference count.
///
/// Hashed once: a name carries its keyed SipHash, computed when it is
/// parsed, and feeds only that to a map's hasher, so the maps keyed by
/// names ([`IdMap`](crate::ids::IdMap)s) keep SipHash's defence against
/// names picked to collide without hashing the text at every lookup (a
/// request looked its name up some nine times: about 3,000 instructions of
/// SipHash, callgrind). Ordered by the text alone.
///
/// Held in place when short: a name of up to `INLINE_NAME` (22) bytes is
/// stored in the value itself, so the sets and sorts that compare names
/// (the deadlines of one instant, the name order of a list) read the
/// bytes where the name sits instead of following each to its text (a
/// cache miss a comparison), and parsing one allocates nothing. A longer
/// name is shared, a clone being a reference count.
#[derive(Clone)]
pub struct TaskName {
    text: Text,
    hash: u64,
}

/// Longest name held in place: with its length and the variant's tag it
/// fills the 24 bytes a shared one takes.
pub const INLINE_NAME: usize = 22;

#[derive(Clone)]
enum Text {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Shared(Arc<str>),
}

impl Text {
    fn new(name: &str) -> Text {
        if name.len() <= INLINE_NAME {
            let mut bytes = [0u8; INLINE_NAME];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            Text::Inline {
                // At most INLINE_NAME, which fits.
                len: name.len() as u8,
                bytes,
            }
        } else {
            Text::Shared(Arc::from(name))
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Shared(text) => text.as_bytes(),
        }
    }
}

/// The process's key for [`TaskName`]'s hash: random (drawn from the
/// standard library's `RandomState`), so that no client can pick names
/// that collide.
fn name_key() -> (u64, u64) {
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    *KEY.get_or_init(|| {
        let random = RandomState::new();
        (random.hash_one(0u64), random.hash_one(1u64))
    })
}

/// As the text alone, `TaskName("agent")`: the hash is the process's
/// secret's work and says nothing to a reader.
impl fmt::Debug for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskName").field(&self.as_str()).finish()
    }
}

impl PartialEq for TaskName {
    fn eq(&self, other: &TaskName) -> bool {
        self.hash == other.hash && self.text.as_bytes() == other.text.as_bytes()
    }
}

impl Eq for TaskName {}

impl PartialOrd for TaskName {
    fn partial_cmp(&self, other: &TaskName) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TaskName {
    fn cmp(&self, other: &TaskName) -> Ordering {
        self.text.as_bytes().cmp(other.text.as_bytes())
    }
}

impl Hash for TaskName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl TaskName {
    /// Validates a name.
    ///
    /// # Errors
    /// [`NameError`] saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<TaskName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: name.len() });
        }
        // Every allowed character is ASCII: bytes are checked, and the
        // first one refused is read back as the character it begins.
        if let Some(at) = name.bytes().position(|b| !is_name_char(char::from(b))) {
            let bad = name[at..]
                .chars()
                .next()
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(NameError::BadChar(bad));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(NameError::BadStart);
        }
        Ok(TaskName {
            text: Text::new(name),
            hash: {
                let (k0, k1) = name_key();
                crate::siphash::siphash13(k0, k1, name.as_bytes())
            },
        })
    }

    /// Whether no other copy of this name's text exists (for a set that
    /// shares one copy among many holders, to drop the ones it alone
    /// keeps). A name held in place shares nothing.
    pub fn is_unshared(&self) -> bool {
        match &self.text {
            Text::Inline { .. } => true,
            Text::Shared(text) => Arc::strong_count(text) == 1,
        }
    }

    /// Whether the name is held in place (up to `INLINE_NAME` bytes):
    /// a copy of it shares nothing, so a set sharing names gains nothing
    /// by keeping it.
    pub fn is_held_in_place(&self) -> bool {
        matches!(self.text, Text::Inline { .. })
    }

    /// The keyed SipHash of the name computed when it was parsed: the
    /// rows' index takes it as it is (maps keyed by name mix it again,
    /// [`crate::ids`]).
    pub(crate) fn hash_key(&self) -> u64 {
        self.hash
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        match &self.text {
            // The bytes were copied whole from a `str` (`Text::new`): they
            // are UTF-8, so this cannot fail.
            Text::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                .expect("an inline name is copied whole from a str"),
            Text::Shared(text) => text,
        }
    }

    /// The name's bytes (ASCII): what a JSON answer or a record writes.
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The name's first 16 bytes as one big-endian number (zero-padded):
    /// ordered as the names are wherever the numbers differ, since no name
    /// holds a zero byte. Sorting many names by it, and by the names only
    /// where it ties, compares numbers held in the sorted items instead of
    /// following each name to its text (a sort of 100k names at a restart
    /// spent about 1,000 instructions a name, callgrind).
    pub fn order_prefix(&self) -> u128 {
        let text = self.text.as_bytes();
        let mut head = [0u8; 16];
        let len = text.len().min(16);
        head[..len].copy_from_slice(&text[..len]);
        u128::from_be_bytes(head)
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')
}

/// Why a task name was refused. The `Display` is the client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    Empty,
    TooLong { len: usize },
    BadChar(char),
    BadStart,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RULE: &str = "a task name is 1 to 128 characters of letters, digits, '.', '_', '-', ':' and '@', starting with a letter or digit";
        match self {
            NameError::Empty => write!(f, "the task name is empty; {RULE}"),
            NameError::TooLong { len } => write!(f, "the task name is {len} bytes long; {RULE}"),
            NameError::BadChar(c) if c.is_control() => {
                write!(f, "the task name contains U+{:04X}; {RULE}", u32::from(*c))
            }
            NameError::BadChar(c) => write!(f, "the task name contains '{c}'; {RULE}"),
            NameError::BadStart => {
                write!(f, "the task name must start with a letter or digit; {RULE}")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Longest `reason` in bytes: a sentence or a command line, short enough
/// that a list of thousands of tasks stays small and a log line readable.
pub const MAX_REASON_LEN: usize = 256;

/// A valid reason: 1 to [`MAX_REASON_LEN`] bytes of printable text (no
/// control characters or Unicode line and paragraph separators, so it
/// prints on one line of a log or a table).
///
/// # Errors
/// A sentence naming the rule.
pub fn check_reason(reason: &str) -> Result<(), String> {
    const RULE: &str = "a reason is 1 to 256 bytes of printable text";
    if reason.is_empty() {
        return Err(format!("the reason is empty; {RULE}"));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(format!("the reason is {} bytes long; {RULE}", reason.len()));
    }
    if let Some(bad) = reason
        .chars()
        .find(|&c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(format!(
            "the reason contains U+{:04X}; {RULE}",
            u32::from(bad)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rule() {
        for good in [
            "agent",
            "a",
            "A-1",
            "job_7.log",
            "host:agent@42",
            &"x".repeat(128),
        ] {
            assert!(TaskName::parse(good).is_ok(), "{good}");
        }
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (&"x".repeat(129), NameError::TooLong { len: 129 }),
            ("a/b", NameError::BadChar('/')),
            ("a b", NameError::BadChar(' ')),
            ("a\0", NameError::BadChar('\0')),
            ("é", NameError::BadChar('é')),
            (".", NameError::BadStart),
            ("..", NameError::BadStart),
            ("-rf", NameError::BadStart),
        ];
        for (bad, expected) in cases {
            assert_eq!(&TaskName::parse(bad).unwrap_err(), expected, "{bad:?}");
        }
    }

    #[test]
    fn names_hash_by_their_text_and_order_by_it() {
        let name = |text: &str| TaskName::parse(text).unwrap();
        let mut map: crate::ids::IdMap<TaskName, usize> = crate::ids::IdMap::default();
        for (i, text) in ["b", "a", "b-", "agent-1", "agent-2"]
            .into_iter()
            .enumerate()
        {
            map.insert(name(text), i);
        }
        // Parsed apart, found by the same hash and text.
        assert_eq!(map.get(&name("b-")), Some(&2));
        assert_eq!(map.get(&name("agent-2")), Some(&4));
        assert_eq!(map.get(&name("agent-3")), None);
        assert_eq!(name("b"), name("b"));
        assert_ne!(name("b"), name("b-"));
        let mut sorted: Vec<_> = map.into_keys().collect();
        sorted.sort();
        let texts: Vec<_> = sorted.iter().map(TaskName::as_str).collect();
        assert_eq!(texts, ["a", "agent-1", "agent-2", "b", "b-"]);
        // The prefix orders as the text does, and ties only on 16 equal
        // leading bytes.
        let long = |tail: &str| name(&format!("0123456789abcdef{tail}"));
        let names = [
            long(""),
            long("x"),
            long("y"),
            name("a"),
            name("a0"),
            name("b"),
        ];
        for pair in names.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(a < b);
            assert!(a.order_prefix() <= b.order_prefix(), "{a} {b}");
            let tie = a.order_prefix() == b.order_prefix();
            let both_long = [a, b]
                .iter()
                .all(|n| n.as_str().starts_with("0123456789abcdef"));
            assert_eq!(tie, both_long, "{a} {b}");
        }
    }

    #[test]
    fn short_names_held_in_place_act_as_long_shared_ones() {
        let at_edge = "a".repeat(INLINE_NAME);
        let past_edge = "a".repeat(INLINE_NAME + 1);
        let (short, long) = (
            TaskName::parse(&at_edge).unwrap(),
            TaskName::parse(&past_edge).unwrap(),
        );
        assert!(short.is_held_in_place() && !long.is_held_in_place());
        assert_eq!((short.as_str(), long.as_str()), (&*at_edge, &*past_edge));
        assert_eq!(short.as_bytes(), at_edge.as_bytes());
        assert_eq!(short.cmp(&long), Ordering::Less);
        assert_eq!(long.cmp(&short), Ordering::Greater);
        assert_eq!(short, TaskName::parse(&at_edge).unwrap());
        assert_ne!(short, long);
        assert_eq!(
            format!("{short} {long:?}"),
            format!("{at_edge} TaskName({past_edge:?})")
        );
        // Only a long name's text is shared, and so only it can be unshared
        // while a copy exists.
        let copy = long.clone();
        assert!(!long.is_unshared());
        drop(copy);
        assert!(long.is_unshared());
        assert!(short.clone().is_unshared());
        assert_eq!(std::mem::size_of::<TaskName>(), 32);
    }

    #[test]
    fn reasons_follow_the_rule() {
        assert!(check_reason("fix the failing tests: claude -p 'go'").is_ok());
        assert!(check_reason("été ✓").is_ok());
        assert!(check_reason(&"x".repeat(MAX_REASON_LEN)).is_ok());
        for bad in ["", "a\nb", "tab\there", "\u{7f}", "a\u{2028}b", "\u{85}"] {
            assert!(check_reason(bad).is_err(), "{bad:?}");
        }
        let long = check_reason(&"x".repeat(257)).unwrap_err();
        assert_eq!(
            long,
            "the reason is 257 bytes long; a reason is 1 to 256 bytes of printable text"
        );
    }
}
