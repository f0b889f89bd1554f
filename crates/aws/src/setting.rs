//! Parsing one setting from a lookup (the process environment, or a map in tests):
//! the leaf every configuration type parses with, so that `settings`, which builds
//! those types from the process, and the types themselves do not import each other.

/// A whole number of 0 or more from `lookup(name)`: `None` when unset or blank, an
/// error naming the variable when it is not a number. Every setting parses its
/// numbers with this.
pub fn number<T: std::str::FromStr>(lookup: impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>, String> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => value
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("{name}={value:?} is not a whole number of 0 or more")),
        _ => Ok(None),
    }
}
