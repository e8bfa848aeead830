//! Checks of the text users send: lengths, and no control characters (PostgreSQL refuses NUL
//! outright, and they have no place in a title or a filter).
//!
//! Bottom layer: imports no other domain module.

use crate::error::{AppError, AppResult};

/// Control characters have no place in a title or a filter, and PostgreSQL refuses NUL outright.
pub(crate) fn reject_control_chars(
    field: &'static str,
    value: &str,
    allow_newlines: bool,
) -> AppResult<()> {
    let bad = |c: char| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t'));
    if value.chars().any(bad) {
        return Err(AppError::bad_input(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

/// Trimmed text of 1 to `max` characters, without control characters.
pub(crate) fn required_text(field: &'static str, value: &str, max: usize) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    reject_control_chars(field, value, false)?;
    Ok(value.to_owned())
}

/// The form an email address is stored and compared in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_and_newlines_only_where_allowed() {
        assert!(reject_control_chars("title", "a title", false).is_ok());
        assert!(reject_control_chars("title", "a\u{0}title", false).is_err());
        assert!(reject_control_chars("title", "two\nlines", false).is_err());
        assert!(reject_control_chars("description", "two\nlines", true).is_ok());
        assert!(reject_control_chars("description", "a\u{7}bell", true).is_err());
    }

    #[test]
    fn required_text_is_trimmed_and_bounded() {
        assert_eq!(required_text("title", "  Gig  ", 10).unwrap(), "Gig");
        assert!(required_text("title", "   ", 10).is_err());
        assert!(required_text("title", &"x".repeat(11), 10).is_err());
        assert_eq!(
            required_text("title", &"é".repeat(10), 10)
                .unwrap()
                .chars()
                .count(),
            10
        );
    }
}
