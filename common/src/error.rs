//! Errors as operators read them: an error's `Display` says only its own
//! layer, its `source()` the cause, and [`chain`] (or [`Chain`] in a
//! format string or a `tracing` field) prints every layer once.

use std::fmt;

/// A cause whose kind varies from site to site, kept as `#[source]`
/// rather than formatted into a string.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The whole chain of an error, `outer: inner: …`, for logs.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    Chain(e).to_string()
}

/// Displays an error with its whole chain of causes, each once:
/// `tracing::warn!(error = %Chain(&e), …)`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("writing x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_once_in_order() {
        let e = Outer(std::io::Error::other("No space left"));
        assert_eq!(chain(&e), "writing x: No space left");
        assert_eq!(format!("{}", Chain(&e)), "writing x: No space left");
    }

    #[test]
    fn repeated_text_is_not_swallowed() {
        // Two layers that happen to share words both appear.
        let e = Outer(std::io::Error::other("writing x"));
        assert_eq!(chain(&e), "writing x: writing x");
    }
}
