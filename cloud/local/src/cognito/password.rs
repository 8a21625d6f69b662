//! Passwords: a user pool's password policy, and the salted slow hash a password is kept as
//! (PBKDF2-HMAC-SHA256, never the password itself).

use std::num::NonZeroU32;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

/// PBKDF2 rounds of a new hash (kept with each hash, so a later raise leaves old hashes valid).
pub const PBKDF2_ITERATIONS: u32 = 100_000;

/// A pool's password policy, as `Policies.PasswordPolicy` carries it on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PasswordPolicy {
    /// Fewest characters (6–99).
    pub minimum_length: u32,
    /// At least one upper-case letter.
    pub require_uppercase: bool,
    /// At least one lower-case letter.
    pub require_lowercase: bool,
    /// At least one digit.
    pub require_numbers: bool,
    /// At least one symbol (any printable ASCII character that is neither a letter, a digit nor a space).
    pub require_symbols: bool,
    /// Days a temporary password stays valid.
    pub temporary_password_validity_days: u32,
}

impl Default for PasswordPolicy {
    /// Cognito's policy for a pool created without one: 8 characters, every class, 7 days.
    fn default() -> Self {
        PasswordPolicy {
            minimum_length: 8,
            require_uppercase: true,
            require_lowercase: true,
            require_numbers: true,
            require_symbols: true,
            temporary_password_validity_days: 7,
        }
    }
}

/// The policy as a request gives it: a member left out is `false` (or the default length).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyInput {
    minimum_length: Option<u32>,
    require_uppercase: Option<bool>,
    require_lowercase: Option<bool>,
    require_numbers: Option<bool>,
    require_symbols: Option<bool>,
    temporary_password_validity_days: Option<u32>,
}

impl PolicyInput {
    /// The policy, or why it is not one (a length outside 6–99, validity outside 0–365 days).
    pub fn into_policy(self) -> Result<PasswordPolicy, String> {
        let minimum_length = self.minimum_length.unwrap_or(8);
        if !(6..=99).contains(&minimum_length) {
            return Err(format!("MinimumLength must be between 6 and 99, not {minimum_length}"));
        }
        let days = self.temporary_password_validity_days.unwrap_or(7);
        if days > 365 {
            return Err(format!("TemporaryPasswordValidityDays must be at most 365, not {days}"));
        }
        Ok(PasswordPolicy {
            minimum_length,
            require_uppercase: self.require_uppercase.unwrap_or(false),
            require_lowercase: self.require_lowercase.unwrap_or(false),
            require_numbers: self.require_numbers.unwrap_or(false),
            require_symbols: self.require_symbols.unwrap_or(false),
            temporary_password_validity_days: days,
        })
    }
}

/// One character class a policy may require: whether it is required, the test, the complaint.
type ClassRule<'a> = (bool, &'a dyn Fn(char) -> bool, &'static str);

fn is_symbol(c: char) -> bool {
    c.is_ascii_graphic() && !c.is_ascii_alphanumeric()
}

impl PasswordPolicy {
    /// `Ok` when `password` meets the policy, otherwise the first rule it breaks, worded as
    /// Cognito's `InvalidPasswordException` words it.
    pub fn check(&self, password: &str) -> Result<(), String> {
        let rules: [ClassRule<'_>; 4] = [
            (self.require_lowercase, &|c: char| c.is_lowercase(), "Password must have lowercase characters"),
            (self.require_uppercase, &|c: char| c.is_uppercase(), "Password must have uppercase characters"),
            (self.require_numbers, &|c: char| c.is_ascii_digit(), "Password must have numeric characters"),
            (self.require_symbols, &is_symbol, "Password must have symbol characters"),
        ];
        let broken = if (password.chars().count() as u64) < u64::from(self.minimum_length) {
            Some("Password not long enough")
        } else {
            rules.iter().find(|(required, has, _)| *required && !password.chars().any(has)).map(|(_, _, why)| *why)
        };
        match broken {
            None => Ok(()),
            Some(why) => Err(format!("Password does not conform to policy: {why}")),
        }
    }

    /// A random password that meets the policy (for a user created without a temporary password).
    pub fn generate(&self) -> String {
        let rng = ring::rand::SystemRandom::new();
        let mut bytes = [0u8; 24];
        rng.fill(&mut bytes).expect("the system's random source");
        let alphabet = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let length = (self.minimum_length as usize).max(bytes.len());
        let mut password: String =
            (0..length).map(|i| alphabet[usize::from(bytes[i % bytes.len()]) % alphabet.len()] as char).collect();
        // One of each class, so any policy is met.
        password.push_str("aZ7%");
        password
    }
}

/// A password kept as a salted PBKDF2-HMAC-SHA256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    /// Rounds.
    pub iterations: u32,
    /// Salt, hex.
    pub salt: String,
    /// Derived key, hex.
    pub hash: String,
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        let mut salt = [0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut salt).expect("the system's random source");
        let mut hash = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero"),
            &salt,
            password.as_bytes(),
            &mut hash,
        );
        PasswordHash { iterations: PBKDF2_ITERATIONS, salt: hex::encode(salt), hash: hex::encode(hash) }
    }

    /// Whether `password` is the one hashed (compared in constant time).
    pub fn matches(&self, password: &str) -> bool {
        let (Ok(salt), Ok(hash), Some(iterations)) =
            (hex::decode(&self.salt), hex::decode(&self.hash), NonZeroU32::new(self.iterations))
        else {
            return false;
        };
        ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password.as_bytes(), &hash).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_names_the_first_rule_a_password_breaks() {
        let policy = PasswordPolicy::default();
        let cases = [
            ("Ab1!", "Password not long enough"),
            ("ABCDEFG1!", "Password must have lowercase characters"),
            ("abcdefg1!", "Password must have uppercase characters"),
            ("Abcdefgh!", "Password must have numeric characters"),
            ("Abcdefgh1", "Password must have symbol characters"),
        ];
        for (password, why) in cases {
            assert_eq!(
                policy.check(password),
                Err(format!("Password does not conform to policy: {why}")),
                "{password}"
            );
        }
        assert_eq!(policy.check("Abcdefg1!"), Ok(()));
    }

    #[test]
    fn a_partial_policy_requires_only_what_it_names() {
        let input: PolicyInput = serde_json::from_str(r#"{"MinimumLength": 6, "RequireNumbers": true}"#).unwrap();
        let policy = input.into_policy().unwrap();
        assert_eq!(policy.check("abcde1"), Ok(()));
        assert!(policy.check("abcdef").is_err());
        let short: PolicyInput = serde_json::from_str(r#"{"MinimumLength": 5}"#).unwrap();
        assert!(short.into_policy().unwrap_err().contains("between 6 and 99"));
    }

    #[test]
    fn generated_passwords_meet_the_strictest_policy() {
        let policy = PasswordPolicy { minimum_length: 40, ..PasswordPolicy::default() };
        let password = policy.generate();
        assert_eq!(policy.check(&password), Ok(()), "{password}");
        assert_ne!(password, policy.generate());
    }

    #[test]
    fn a_hash_matches_its_password_only_and_does_not_hold_it() {
        let hash = PasswordHash::new("Correct-horse-1");
        assert!(hash.matches("Correct-horse-1"));
        assert!(!hash.matches("Correct-horse-2"));
        assert!(!serde_json::to_string(&hash).unwrap().contains("Correct"));
        assert_ne!(hash.salt, PasswordHash::new("Correct-horse-1").salt, "each hash has its own salt");
    }
}
