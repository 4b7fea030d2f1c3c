//! Panics on threads the caller does not join (device engine threads): counted by a
//! process-wide panic hook, so a target can fail when one of its engines panicked even
//! though the model swallows the thread's result.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static PANICS: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// Installs the counting hook (once; it chains to the hook installed before it, e.g.
/// libFuzzer's, which aborts).
pub fn install() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Panics observed in the process since the hook was installed.
#[must_use]
pub fn panics() -> u64 {
    PANICS.load(Ordering::SeqCst)
}

/// Runs `f` and panics if any thread panicked meanwhile.
pub fn no_thread_panics<R>(what: &str, f: impl FnOnce() -> R) -> R {
    install();
    let before = panics();
    let r = f();
    let after = panics();
    assert_eq!(before, after, "{what}: a device thread panicked");
    r
}
