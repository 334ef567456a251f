//! What a username and a password must be.
//!
//! Usernames are stored in NFKC form and compared by a key (NFKC, lower-cased, then the
//! UTS #39 confusable skeleton), so `AGENTA` beside `agenta`, a full-width `ａｄｍｉｎ` or a
//! Cyrillic `аdmin` beside `admin` cannot both exist; a name mixing scripts is refused
//! outright. Passwords must resist guessing: more than 10^10 guesses by zxcvbn's estimate
//! (its top score; its dictionaries hold the commonest passwords, names and keyboard walks,
//! and it sees through repetition, sequences and the username), not only be long.

use unicode_normalization::UnicodeNormalization as _;
use unicode_security::MixedScript as _;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 1024;
pub const MAX_USERNAME: usize = 100;

/// The password documented for development installations (`./dev up`); accepted only
/// where [`PasswordPolicy::allow_development_password`] is set.
pub const DEVELOPMENT_PASSWORD: &str = "admin-password";

/// A username in its stored form and its comparison key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username {
    pub display: String,
    pub key: String,
}

/// The comparison key of a username (also of one typed at sign-in).
pub fn username_key(name: &str) -> String {
    let folded: String = name.trim().nfkc().flat_map(char::to_lowercase).collect();
    unicode_security::skeleton(&folded).collect()
}

/// Parses a new username; the error says what is wrong with it.
pub fn username(raw: &str) -> Result<Username, &'static str> {
    let display: String = raw.trim().nfkc().collect();
    let length = display.chars().count();
    if length == 0 || length > MAX_USERNAME {
        return Err("must be 1 to 100 characters");
    }
    if display
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() && c != ' ')
    {
        return Err("must not contain control characters or tabs");
    }
    if !display.as_str().is_single_script() {
        return Err("must not mix writing systems (for example Latin with Cyrillic letters)");
    }
    Ok(Username {
        key: username_key(&display),
        display,
    })
}

/// Which passwords are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Accept [`DEVELOPMENT_PASSWORD`] (development installations only).
    pub allow_development_password: bool,
}

impl PasswordPolicy {
    /// Checks a new password for `username`; the error says why it is refused.
    pub fn check(self, password: &str, username: &str) -> Result<(), String> {
        let length = password.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
            return Err(format!(
                "must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
            ));
        }
        if self.allow_development_password && password == DEVELOPMENT_PASSWORD {
            return Ok(());
        }
        // zxcvbn's cost grows with the length; past a few hundred characters a password
        // is not guessable anyway.
        let sample: String = password.chars().take(256).collect();
        let estimate = zxcvbn::zxcvbn(&sample, &[username]);
        if estimate.score() < zxcvbn::Score::Four {
            let hint = estimate
                .feedback()
                .and_then(|f| f.warning())
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            return Err(format!(
                "is too easy to guess{hint}: use a longer passphrase of unrelated words, not a common password, a name, a keyboard pattern or a repetition"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_compatibility_variants_share_a_key() {
        assert_eq!(username_key("AGENTA"), username_key("agenta"));
        assert_eq!(username_key("ａｄｍｉｎ"), username_key("admin"));
        assert_eq!(username_key("  Admin "), username_key("admin"));
        assert_ne!(username_key("alice"), username_key("bob"));
    }

    #[test]
    fn cyrillic_look_alikes_share_a_key_and_mixed_scripts_are_refused() {
        // U+0430 CYRILLIC SMALL LETTER A.
        let lookalike = "\u{430}dmin";
        assert_eq!(username_key(lookalike), username_key("admin"));
        assert!(username(lookalike).is_err());
        // One script only is fine, whatever the script.
        assert!(username("\u{430}\u{434}\u{43c}\u{438}\u{43d}").is_ok());
        assert!(username("ada.lovelace@example.com").is_ok());
    }

    #[test]
    fn usernames_without_content_or_with_controls_are_refused() {
        assert!(username("   ").is_err());
        assert!(username("a\u{0}b").is_err());
        assert!(username("a\tb").is_err());
        assert!(username(&"x".repeat(101)).is_err());
        assert_eq!(username(" ada ").map(|u| u.display), Ok("ada".to_owned()));
    }

    #[test]
    fn common_repetitive_and_name_based_passwords_are_refused() {
        let policy = PasswordPolicy::default();
        for weak in [
            "password123",
            "1234567890",
            "qwertyuiop",
            "aaaaaaaaaaaa",
            "abcabcabcabc",
            "Password1!",
            "alice-password",
            "iloveyou12",
        ] {
            assert!(policy.check(weak, "alice").is_err(), "{weak} was accepted");
        }
        assert!(policy.check("short", "alice").is_err());
        for strong in ["correct horse battery staple", "violet-lantern-orbit-57"] {
            assert_eq!(policy.check(strong, "alice"), Ok(()), "{strong}");
        }
    }

    #[test]
    fn the_development_password_only_where_allowed() {
        assert!(
            PasswordPolicy::default()
                .check(DEVELOPMENT_PASSWORD, "admin")
                .is_err()
        );
        let development = PasswordPolicy {
            allow_development_password: true,
        };
        assert_eq!(development.check(DEVELOPMENT_PASSWORD, "admin"), Ok(()));
    }
}
