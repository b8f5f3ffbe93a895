//! Two pieces of work at once, for start-up: one on a scoped thread of its
//! own, the other on the caller's (recovery's log scan beside the tables'
//! load, the two halves of a usage history's parse).

/// Runs `here` on the calling thread and `there` on a scoped thread named
/// `name` meanwhile; returns both results. Should no thread be had,
/// `there` runs after `here`; a panic on the thread is resumed on the
/// caller's, as it would have happened there.
pub(crate) fn both<A, B: Send>(
    name: &str,
    here: impl FnOnce() -> A,
    there: impl Fn() -> B + Sync,
) -> (A, B) {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(scope, &there);
        let here = here();
        let there = match thread {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => there(),
        };
        (here, there)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_run_and_a_panic_there_comes_back_here() {
        let mut here_ran = false;
        let (here, there) = both(
            "test",
            || {
                here_ran = true;
                std::thread::current().name().map(str::to_owned)
            },
            || std::thread::current().name().map(str::to_owned),
        );
        assert!(here_ran);
        assert_ne!(here.as_deref(), Some("test"));
        assert_eq!(there.as_deref(), Some("test"));
        let panicked =
            std::panic::catch_unwind(|| both("test", || 1, || -> u8 { panic!("there") }));
        let message = panicked.unwrap_err();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"there"));
    }
}
