//! Placeholder: a redb storage backend that fails on purpose (issue 4).
