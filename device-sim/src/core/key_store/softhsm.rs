//! A SoftHSM2 token of its own (Debian's `softhsm2` package) in a directory: what the tests and
//! a demo use in place of a hardware token. SoftHSM2 reads its configuration file from
//! `SOFTHSM2_CONF` when the library is initialised, so a process that opens this token must
//! have that variable set ([`SoftToken::conf`]) before it starts.

use std::path::{Path, PathBuf};

use super::Pkcs11Config;

/// Where Debian and Ubuntu (and Fedora) install SoftHSM2's PKCS#11 library.
const LIBRARIES: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

/// What to tell someone without SoftHSM2.
pub const MISSING: &str = "SoftHSM2 is missing: the PKCS#11 key-storage tests need it. Install it \
     (Debian/Ubuntu: apt-get install softhsm2; Fedora: dnf install softhsm) or run scripts/test.sh \
     as root, which installs it";

/// An initialised SoftHSM2 token whose configuration and objects live in one directory.
#[derive(Debug, Clone)]
pub struct SoftToken {
    /// The configuration file: set `SOFTHSM2_CONF` to it in the process that opens the token.
    pub conf: PathBuf,
    /// The provider configuration that opens it (the user PIN is [`SoftToken::USER_PIN`]).
    pub config: Pkcs11Config,
}

impl SoftToken {
    /// The user PIN of every token made here.
    pub const USER_PIN: &str = "1234";

    /// SoftHSM2's library, if installed.
    pub fn library() -> Option<PathBuf> {
        LIBRARIES.iter().map(PathBuf::from).find(|p| p.is_file())
    }

    /// A new token labelled `label` in `dir` (created): `softhsm2-util --init-token --free`.
    pub fn new(dir: &Path, label: &str) -> Result<Self, String> {
        let library = Self::library().ok_or_else(|| MISSING.to_owned())?;
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| format!("cannot make {}: {e}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        let text =
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display());
        std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let output = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin", Self::USER_PIN, "--so-pin", "5678"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .map_err(|e| format!("softhsm2-util: {e}. {MISSING}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "softhsm2-util --init-token failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        // "The token has been initialized and is reassigned to slot 1234567"
        let slot = stdout
            .split_whitespace()
            .last()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("softhsm2-util did not name the slot: {stdout}"))?;
        let config =
            Pkcs11Config { name: format!("softhsm-{label}"), library, slot, user_pin: Self::USER_PIN.to_owned() };
        Ok(Self { conf, config })
    }

    /// Writes the provider configuration (the `aws.greengrass.crypto.Pkcs11Provider` keys, JSON)
    /// to `path`, for `device-sim core --pkcs11`.
    pub fn write_config(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::json!({
            "name": self.config.name,
            "library": self.config.library,
            "slot": self.config.slot,
            "userPin": self.config.user_pin,
        });
        std::fs::write(path, json.to_string())
    }
}
