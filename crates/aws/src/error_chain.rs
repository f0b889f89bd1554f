//! Errors in one line with everything that caused them: `top: cause: root cause`.
//! Errors display only their own message and hand their cause out through
//! [`std::error::Error::source`]; logs and the CLI print the whole chain.

use std::fmt;

/// `error` and its sources, separated by `: `.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ports::{Cause, StoreError};

    #[test]
    fn a_store_error_prints_its_message_and_its_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = StoreError::Unavailable(Cause::caused_by("Query: the request could not be sent", io));
        assert_eq!(error.to_string(), "unavailable: Query: the request could not be sent");
        assert_eq!(
            super::chain(&error).to_string(),
            "unavailable: Query: the request could not be sent: connection refused"
        );
        assert_eq!(
            format!("{:#}", anyhow::Error::new(error)),
            "unavailable: Query: the request could not be sent: connection refused"
        );
    }
}
