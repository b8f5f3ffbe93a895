//! Placeholder: the client library of `sprite-env` (issue 7).
